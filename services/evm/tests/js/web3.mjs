// web3.js 4 against a Parsec endpoint: deploy, a burst of transfers, receipts, balances,
// past events, revert reasons, gas estimation. Keys come from the mnemonic through ethers
// (web3.js 4 has no HD wallet of its own).
import { HDNodeWallet, Wallet } from "ethers";
import { Web3 } from "web3";
import { BURST, MNEMONIC, RPC_URL, SUPPLY, artifact, check, equal, run, withTimeout } from "./lib.mjs";

await run("web3", async () => {
  const web3 = new Web3(RPC_URL);
  web3.setConfig({ transactionPollingInterval: 100, transactionReceiptPollingInterval: 100, transactionConfirmationPollingInterval: 100 });
  const key = HDNodeWallet.fromPhrase(MNEMONIC, undefined, "m/44'/60'/0'/0/0").privateKey;
  const account = web3.eth.accounts.wallet.add(key).get(0);
  const from = account.address;
  equal(from.toLowerCase(), "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266", "first dev account");
  check((await web3.eth.getBalance(from)) > 0n, "the first dev account is not funded");

  const token = artifact("ParsecToken");
  const contract = await new web3.eth.Contract(token.abi)
    .deploy({ data: token.bytecode, arguments: ["Parsec", "PRS", SUPPLY] })
    .send({ from });
  const address = contract.options.address;
  check(address, "deployment returned no address");
  equal(await contract.methods.balanceOf(from).call(), SUPPLY, "deployer balance");
  const start = await web3.eth.getBlockNumber();

  const recipients = Array.from({ length: BURST }, () => Wallet.createRandom().address);
  const estimate = await contract.methods.transfer(recipients[0], 1n).estimateGas({ from });
  check(estimate > 21_000n && estimate < 100_000n, `transfer gas estimate ${estimate}`);

  const nonce = await web3.eth.getTransactionCount(from, "pending");
  const receipts = await withTimeout(
    Promise.all(
      recipients.map((to, i) =>
        contract.methods.transfer(to, BigInt(i + 1)).send({ from, nonce: nonce + BigInt(i), gas: estimate * 2n }),
      ),
    ),
    60_000,
    "burst receipts",
  );
  receipts.forEach((receipt, i) => equal(receipt.status, 1n, `receipt ${i} status`));
  for (const [i, to] of recipients.entries()) {
    equal(await contract.methods.balanceOf(to).call(), BigInt(i + 1), `balance of recipient ${i}`);
  }

  const events = await contract.getPastEvents("Transfer", { filter: { from }, fromBlock: start + 1n });
  equal(events.length, BURST, "Transfer events from the deployer");
  equal(
    events.map((e) => e.returnValues.to.toLowerCase()).join(),
    recipients.map((r) => r.toLowerCase()).join(),
    "event recipients in order",
  );

  // Reverts: the custom error's data, an Error(string) reason.
  const nobody = Wallet.createRandom().address;
  try {
    await contract.methods.transfer(from, 1n).call({ from: nobody });
    throw new Error("a transfer without funds did not revert");
  } catch (error) {
    const text = JSON.stringify(error, (_, v) => (typeof v === "bigint" ? v.toString() : v));
    check(text.includes("0xe450d38c"), `custom error selector missing: ${text}`);
  }
  const probeArtifact = artifact("Probe");
  const probe = await new web3.eth.Contract(probeArtifact.abi).deploy({ data: probeArtifact.bytecode }).send({ from });
  try {
    await probe.methods.failWithReason("no way").call({ from });
    throw new Error("failWithReason did not revert");
  } catch (error) {
    const text = `${error.message} ${error.cause?.message ?? ""} ${error.innerError?.message ?? ""} ${error.reason ?? ""}`;
    check(text.includes("no way"), `revert reason missing: ${text}`);
  }
});
