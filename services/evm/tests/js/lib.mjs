// Shared by the client scripts: the endpoint, the development mnemonic, the compiled
// contracts, and a failure that says what went wrong.
import { readFileSync } from "node:fs";

export const RPC_URL = process.env.PARSEC_RPC_URL;
export const MNEMONIC = "test test test test test test test test test test test junk";
/// Transfers sent in one burst, with consecutive nonces, without waiting for each.
export const BURST = 8;
export const SUPPLY = 1_000_000n * 10n ** 18n;

export function artifact(name) {
  const path = new URL(`../../contracts/artifacts/${name}.json`, import.meta.url);
  const json = JSON.parse(readFileSync(path, "utf8"));
  return { abi: json.abi, bytecode: json.bytecode.startsWith("0x") ? json.bytecode : `0x${json.bytecode}` };
}

export function check(condition, message) {
  if (!condition) throw new Error(message);
}

export function equal(actual, expected, what) {
  check(actual === expected, `${what}: expected ${expected}, got ${actual}`);
}

export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/// Runs `body`, prints "<name>: ok" or the failure, and exits 0 or 1.
export async function run(name, body) {
  if (!RPC_URL) {
    console.error(`${name}: FAILED: set PARSEC_RPC_URL to the JSON-RPC endpoint (http://host:port)`);
    process.exit(2);
  }
  try {
    await withTimeout(body(), 120_000, `${name} as a whole`);
    console.log(`${name}: ok`);
    process.exit(0);
  } catch (error) {
    console.error(`${name}: FAILED: ${error?.stack ?? error}`);
    process.exit(1);
  }
}
