// ethers v6 against a Parsec endpoint: deploy, a burst of transfers, receipts, balances,
// events (queryFilter and a polling listener), revert reasons, gas estimation.
import { ethers } from "ethers";
import { BURST, MNEMONIC, RPC_URL, SUPPLY, artifact, check, equal, run, withTimeout } from "./lib.mjs";

await run("ethers", async () => {
  // ethers answers a repeated request from a 250 ms cache by default, which on a chain that
  // commits in milliseconds returns a stale nonce right after a deployment.
  const provider = new ethers.JsonRpcProvider(RPC_URL, undefined, { cacheTimeout: -1 });
  provider.pollingInterval = 100;
  const network = await provider.getNetwork();
  const deployer = ethers.HDNodeWallet.fromPhrase(MNEMONIC, undefined, "m/44'/60'/0'/0/0").connect(provider);
  equal(deployer.address, "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", "first dev account");
  check((await provider.getBalance(deployer.address)) > 0n, "the first dev account is not funded");

  const token = artifact("ParsecToken");
  const factory = new ethers.ContractFactory(token.abi, token.bytecode, deployer);
  const contract = await factory.deploy("Parsec", "PRS", SUPPLY);
  await withTimeout(contract.waitForDeployment(), 30_000, "token deployment");
  const address = await contract.getAddress();
  equal(await contract.balanceOf(deployer.address), SUPPLY, "deployer balance");
  const start = await provider.getBlockNumber();

  // A polling listener (eth_newFilter + eth_getFilterChanges), installed before the burst.
  const heard = [];
  const allHeard = new Promise((resolve) => {
    contract.on(contract.filters.Transfer(deployer.address), (from, to, value) => {
      heard.push(to);
      if (heard.length === BURST) resolve();
    });
  });

  const recipients = Array.from({ length: BURST }, () => ethers.Wallet.createRandom().address);
  const estimate = await contract.transfer.estimateGas(recipients[0], 1n);
  check(estimate > 21_000n && estimate < 100_000n, `transfer gas estimate ${estimate}`);

  const nonce = await provider.getTransactionCount(deployer.address, "pending");
  const sent = await Promise.all(
    recipients.map((to, i) => contract.transfer(to, BigInt(i + 1), { nonce: nonce + i })),
  );
  const receipts = await withTimeout(Promise.all(sent.map((tx) => tx.wait())), 60_000, "burst receipts");
  receipts.forEach((receipt, i) => {
    equal(receipt.status, 1, `receipt ${i} status`);
    equal(receipt.logs.length, 1, `receipt ${i} logs`);
  });
  for (const [i, to] of recipients.entries()) {
    equal(await contract.balanceOf(to), BigInt(i + 1), `balance of recipient ${i}`);
  }
  equal(await provider.getTransactionCount(deployer.address), nonce + BURST, "nonce after the burst");

  const events = await contract.queryFilter(contract.filters.Transfer(deployer.address), start + 1);
  equal(events.length, BURST, "Transfer events from the deployer");
  equal(events.map((e) => e.args.to).join(), recipients.join(), "event recipients in order");
  await withTimeout(allHeard, 30_000, `the listener heard ${heard.length} of ${BURST} transfers`);
  await contract.removeAllListeners();

  // Reverts: a custom error decoded from the data, an Error(string) reason.
  const nobody = ethers.Wallet.createRandom().address;
  try {
    // A read-only runner may call from any address.
    await contract.connect(provider).transfer.staticCall(deployer.address, 1n, { from: nobody });
    throw new Error("a transfer without funds did not revert");
  } catch (error) {
    equal(error.code, "CALL_EXCEPTION", `error code (${error.message})`);
    equal(error.revert?.name, "ERC20InsufficientBalance", "custom error");
  }
  const probeArtifact = artifact("Probe");
  const probe = await new ethers.ContractFactory(probeArtifact.abi, probeArtifact.bytecode, deployer).deploy();
  await probe.waitForDeployment();
  try {
    await probe.failWithReason.staticCall("no way");
    throw new Error("failWithReason did not revert");
  } catch (error) {
    equal(error.code, "CALL_EXCEPTION", `error code (${error.message})`);
    equal(error.reason, "no way", "revert reason");
  }
  check(network.chainId > 0n, "chain id");
});
