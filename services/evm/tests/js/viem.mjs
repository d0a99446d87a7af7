// viem 2 against a Parsec endpoint: deploy, a burst of transfers, receipts, balances, events
// (getContractEvents, getLogs, watchContractEvent), revert reasons, gas estimation.
import {
  BaseError,
  ContractFunctionRevertedError,
  createPublicClient,
  createWalletClient,
  defineChain,
  http,
  parseAbiItem,
} from "viem";
import { generatePrivateKey, mnemonicToAccount, privateKeyToAccount } from "viem/accounts";
import { BURST, MNEMONIC, RPC_URL, SUPPLY, artifact, check, equal, run, withTimeout } from "./lib.mjs";

function revertOf(error) {
  check(error instanceof BaseError, `not a viem error: ${error}`);
  const reverted = error.walk((e) => e instanceof ContractFunctionRevertedError);
  check(reverted, `no revert in: ${error.message}`);
  return reverted;
}

await run("viem", async () => {
  const probeClient = createPublicClient({ transport: http(RPC_URL) });
  const chainId = await probeClient.getChainId();
  const chain = defineChain({
    id: chainId,
    name: "parsec",
    nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
    rpcUrls: { default: { http: [RPC_URL] } },
  });
  const transport = http(RPC_URL, { batch: true });
  const client = createPublicClient({ chain, transport, pollingInterval: 100 });
  const account = mnemonicToAccount(MNEMONIC, { addressIndex: 0 });
  equal(account.address, "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", "first dev account");
  const wallet = createWalletClient({ account, chain, transport });
  check((await client.getBalance({ address: account.address })) > 0n, "the first dev account is not funded");

  const token = artifact("ParsecToken");
  const deployHash = await wallet.deployContract({ abi: token.abi, bytecode: token.bytecode, args: ["Parsec", "PRS", SUPPLY] });
  const deployed = await client.waitForTransactionReceipt({ hash: deployHash, pollingInterval: 100 });
  equal(deployed.status, "success", "deployment status");
  const address = deployed.contractAddress;
  const read = (functionName, args) => client.readContract({ address, abi: token.abi, functionName, args });
  equal(await read("balanceOf", [account.address]), SUPPLY, "deployer balance");

  // A polling watcher (eth_newFilter + eth_getFilterChanges), started before the burst.
  const heard = [];
  let unwatch;
  const allHeard = new Promise((resolve, reject) => {
    unwatch = client.watchContractEvent({
      address,
      abi: token.abi,
      eventName: "Transfer",
      args: { from: account.address },
      pollingInterval: 100,
      onLogs: (logs) => {
        heard.push(...logs);
        if (heard.length >= BURST) resolve();
      },
      onError: reject,
    });
  });

  const recipients = Array.from({ length: BURST }, () => privateKeyToAccount(generatePrivateKey()).address);
  const estimate = await client.estimateContractGas({
    address, abi: token.abi, functionName: "transfer", args: [recipients[0], 1n], account,
  });
  check(estimate > 21_000n && estimate < 100_000n, `transfer gas estimate ${estimate}`);

  const nonce = await client.getTransactionCount({ address: account.address, blockTag: "pending" });
  const hashes = await Promise.all(
    recipients.map((to, i) =>
      wallet.writeContract({ address, abi: token.abi, functionName: "transfer", args: [to, BigInt(i + 1)], nonce: nonce + i }),
    ),
  );
  const receipts = await withTimeout(
    Promise.all(hashes.map((hash) => client.waitForTransactionReceipt({ hash, pollingInterval: 100 }))),
    60_000,
    "burst receipts",
  );
  receipts.forEach((receipt, i) => equal(receipt.status, "success", `receipt ${i} status`));
  for (const [i, to] of recipients.entries()) {
    equal(await read("balanceOf", [to]), BigInt(i + 1), `balance of recipient ${i}`);
  }

  const fromBlock = deployed.blockNumber + 1n;
  const events = await client.getContractEvents({
    address, abi: token.abi, eventName: "Transfer", args: { from: account.address }, fromBlock,
  });
  equal(events.length, BURST, "Transfer events from the deployer");
  equal(events.map((e) => e.args.to).join(), recipients.join(), "event recipients in order");
  const toSecond = await client.getLogs({
    address,
    event: parseAbiItem("event Transfer(address indexed from, address indexed to, uint256 value)"),
    args: { to: [recipients[1], recipients[3]] },
    fromBlock,
  });
  equal(toSecond.length, 2, "logs to two recipients (OR on a topic)");
  await withTimeout(allHeard, 30_000, `the watcher heard ${heard.length} of ${BURST} transfers`);
  unwatch();

  // Reverts: a custom error decoded from the data, an Error(string) reason.
  const nobody = privateKeyToAccount(generatePrivateKey());
  try {
    await client.simulateContract({ address, abi: token.abi, functionName: "transfer", args: [account.address, 1n], account: nobody });
    throw new Error("a transfer without funds did not revert");
  } catch (error) {
    equal(revertOf(error).data?.errorName, "ERC20InsufficientBalance", "custom error");
  }
  const probeArtifact = artifact("Probe");
  const probeHash = await wallet.deployContract({ abi: probeArtifact.abi, bytecode: probeArtifact.bytecode });
  const probe = (await client.waitForTransactionReceipt({ hash: probeHash, pollingInterval: 100 })).contractAddress;
  try {
    await client.simulateContract({ address: probe, abi: probeArtifact.abi, functionName: "failWithReason", args: ["no way"], account });
    throw new Error("failWithReason did not revert");
  } catch (error) {
    equal(revertOf(error).reason, "no way", "revert reason");
  }
});
