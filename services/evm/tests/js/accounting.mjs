// viem 2 against a Parsec endpoint: exact balance accounting of legacy and EIP-1559 transactions,
// a mined reverted transaction (nonce used, fee charged, state unchanged), 50 concurrent token
// transfers from 10 accounts, and eth_getLogs by block hash.
import { createPublicClient, createWalletClient, defineChain, encodeFunctionData, http, parseEther } from "viem";
import { generatePrivateKey, mnemonicToAccount, privateKeyToAccount } from "viem/accounts";
import { MNEMONIC, RPC_URL, SUPPLY, artifact, check, equal, run } from "./lib.mjs";

const SENDERS = 10;
const PER_SENDER = 5;

await run("accounting", async () => {
  const chainId = await createPublicClient({ transport: http(RPC_URL) }).getChainId();
  const chain = defineChain({
    id: chainId,
    name: "parsec",
    nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
    rpcUrls: { default: { http: [RPC_URL] } },
  });
  const transport = http(RPC_URL);
  const client = createPublicClient({ chain, transport, pollingInterval: 100 });
  const wait = (hash) => client.waitForTransactionReceipt({ hash, pollingInterval: 100 });
  // The sixth development account: the other scripts use the first ones.
  const payer = mnemonicToAccount(MNEMONIC, { addressIndex: 5 });
  const wallet = createWalletClient({ account: payer, chain, transport });

  // Legacy and EIP-1559 transfers: every wei accounted for.
  for (const type of ["legacy", "eip1559"]) {
    const to = privateKeyToAccount(generatePrivateKey()).address;
    const value = parseEther("1.25");
    const before = await client.getBalance({ address: payer.address });
    const hash = await wallet.sendTransaction({ to, value, type });
    const receipt = await wait(hash);
    equal(receipt.status, "success", `${type} status`);
    equal(receipt.type, type, `${type} receipt type`);
    const fee = receipt.gasUsed * receipt.effectiveGasPrice;
    equal(await client.getBalance({ address: payer.address }), before - value - fee, `${type}: sender balance`);
    equal(await client.getBalance({ address: to }), value, `${type}: recipient balance`);
  }

  // A token, and a transfer of more than the sender holds, mined anyway (explicit gas, no
  // estimate): status reverted, nonce used, fee charged, balances unchanged.
  const token = artifact("ParsecToken");
  const deployHash = await wallet.deployContract({ abi: token.abi, bytecode: token.bytecode, args: ["Acct", "ACT", SUPPLY] });
  const address = (await wait(deployHash)).contractAddress;
  const balanceOf = (who) => client.readContract({ address, abi: token.abi, functionName: "balanceOf", args: [who] });
  const poor = privateKeyToAccount(generatePrivateKey());
  await wait(await wallet.sendTransaction({ to: poor.address, value: parseEther("1") }));
  const poorWallet = createWalletClient({ account: poor, chain, transport });
  const ethBefore = await client.getBalance({ address: poor.address });
  const reverted = await wait(
    await poorWallet.sendTransaction({
      to: address,
      data: encodeFunctionData({ abi: token.abi, functionName: "transfer", args: [payer.address, 1n] }),
      gas: 100_000n,
    }),
  );
  equal(reverted.status, "reverted", "an over-balance transfer is mined as reverted");
  equal(await client.getTransactionCount({ address: poor.address }), 1, "the reverted transaction used its nonce");
  equal(
    await client.getBalance({ address: poor.address }),
    ethBefore - reverted.gasUsed * reverted.effectiveGasPrice,
    "the reverted transaction paid its fee and nothing else",
  );
  equal(reverted.logs.length, 0, "a reverted transaction has no logs");

  // 50 concurrent transfers from 10 accounts (explicit consecutive nonces per account).
  const senders = Array.from({ length: SENDERS }, () => privateKeyToAccount(generatePrivateKey()));
  for (const sender of senders) {
    await wait(await wallet.sendTransaction({ to: sender.address, value: parseEther("1") }));
    await wait(await wallet.writeContract({ address, abi: token.abi, functionName: "transfer", args: [sender.address, 1_000n] }));
  }
  const sink = privateKeyToAccount(generatePrivateKey()).address;
  const hashes = await Promise.all(
    senders.flatMap((sender) => {
      const w = createWalletClient({ account: sender, chain, transport });
      return Array.from({ length: PER_SENDER }, (_, nonce) =>
        w.writeContract({ address, abi: token.abi, functionName: "transfer", args: [sink, 10n], nonce, gas: 100_000n }),
      );
    }),
  );
  const receipts = await Promise.all(hashes.map(wait));
  check(receipts.every((r) => r.status === "success"), "every concurrent transfer succeeded");
  equal(await balanceOf(sink), BigInt(SENDERS * PER_SENDER * 10), "the sink's balance");
  for (const sender of senders) {
    equal(await balanceOf(sender.address), 1_000n - BigInt(PER_SENDER * 10), "a sender's token balance");
  }

  // eth_getLogs by block hash: the block of one transfer lists its Transfer log.
  const one = receipts[0];
  const logs = await client.getLogs({ blockHash: one.blockHash, address });
  check(
    logs.some((log) => log.transactionHash === one.transactionHash && log.logIndex === one.logs[0].logIndex),
    "getLogs by block hash finds the transfer's log at its block-level index",
  );
});
