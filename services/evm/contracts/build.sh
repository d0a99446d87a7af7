#!/usr/bin/env bash
# Compiles the contracts in this folder into artifacts/*.json ({contractName, abi, bytecode,
# deployedBytecode}), which the tests include. Offline apart from npm: solcjs (the npm `solc`
# package, no native compiler) and OpenZeppelin Contracts are installed into a temporary folder.
set -euo pipefail

SOLC_VERSION="${SOLC_VERSION:-0.8.37}"
OZ_VERSION="${OZ_VERSION:-5.7.0}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund \
    "solc@$SOLC_VERSION" "@openzeppelin/contracts@$OZ_VERSION" >/dev/null)

mkdir -p "$here/artifacts"
NODE_PATH="$work/node_modules" node - "$here" "$work" <<'JS'
const fs = require("fs");
const path = require("path");
const solc = require("solc");
const [here, work] = process.argv.slice(2);

const sources = {};
for (const file of fs.readdirSync(here).filter((f) => f.endsWith(".sol")).sort()) {
  sources[file] = { content: fs.readFileSync(path.join(here, file), "utf8") };
}
const input = {
  language: "Solidity",
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "prague",
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};
function findImports(name) {
  const file = path.join(work, "node_modules", name);
  return fs.existsSync(file) ? { contents: fs.readFileSync(file, "utf8") } : { error: "not found: " + name };
}
const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) console.error(e.formattedMessage);
if (errors.length) process.exit(1);

for (const file of Object.keys(sources)) {
  for (const [name, contract] of Object.entries(output.contracts[file])) {
    const artifact = {
      contractName: name,
      compiler: "solc " + solc.version(),
      abi: contract.abi,
      bytecode: "0x" + contract.evm.bytecode.object,
      deployedBytecode: "0x" + contract.evm.deployedBytecode.object,
    };
    fs.writeFileSync(path.join(here, "artifacts", name + ".json"), JSON.stringify(artifact, null, 2) + "\n");
    console.log("wrote artifacts/" + name + ".json");
  }
}
JS
