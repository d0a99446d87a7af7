#!/usr/bin/env python3
"""Where a process's CPU goes, by component: reads `perf script` output (call graphs) on stdin
and charges every sample to the component of the frame nearest its leaf that names one (an
in-process shard call made from inside the EVM's key discovery is the shard's; an allocation
is its caller's). Samples with no such frame are the async runtime's and the kernel's. With --us-per-tx, converts shares to microseconds per transaction.

    perf script -i perf.data | scripts/perf_components.py --us-per-tx 420
"""
import argparse
import re
import sys

# (component, pattern over one frame); within a frame the first match wins.
COMPONENTS = [
    ("signature recovery (libsecp256k1)", re.compile(r"secp256k1")),
    ("Raft log on disk (append, fsync)", re.compile(r"log_store|redb::|parsec_raft::wal|fdatasync|fsync")),
    ("Raft state machine (apply)", re.compile(r"parsec_raft::state_machine|parsec_shard::state_machine|ReplicatedState")),
    ("Raft core (openraft, batching)", re.compile(r"openraft|parsec_raft::batcher")),
    ("shard: lock table and 2PC engine", re.compile(r"parsec_shard")),
    ("broker: transactions and shard calls", re.compile(r"parsec_broker")),
    ("EVM execution (revm, key discovery)", re.compile(r"revm|parsec_evm::executor|parsec_evm::view")),
    ("blocks (producer, parts, ticket machine)", re.compile(r"parsec_evm::chain::producer|parsec_evm::chain::blocks|parsec_ticketer")),
    ("agent: nonce lines, transaction loop, metrics", re.compile(r"parsec_evm::chain::agent_chain|parsec_evm::chain::nonces|parsec_evm::tx|parsec_agent|parsec_telemetry|prometheus")),
    ("JSON-RPC server (HTTP, JSON)", re.compile(r"jsonrpsee|hyper|serde_json|parsec_evm::rpc")),
    ("gRPC (tonic, h2, prost)", re.compile(r"tonic|\bh2::|prost")),
]
OTHER = "async runtime and kernel (scheduling, wake-ups, sockets)"


def samples(lines):
    """Yields the frames (function names) of each sample."""
    frames = []
    in_sample = False
    for line in lines:
        if not line.strip():
            if frames:
                yield frames
            frames, in_sample = [], False
            continue
        if not line.startswith((" ", "\t")):
            in_sample = True
            continue
        if in_sample:
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                frames.append(parts[1])
    if frames:
        yield frames


def component(frames):
    """The component of the frame nearest the leaf (perf prints leaves first) that names one."""
    for frame in frames:
        for name, pattern in COMPONENTS:
            if pattern.search(frame):
                return name
    return OTHER


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--us-per-tx", type=float, help="the process's CPU per transaction")
    args = parser.parse_args()
    counts = {name: 0 for name, _ in COMPONENTS}
    counts[OTHER] = 0
    total = 0
    for frames in samples(sys.stdin):
        counts[component(frames)] += 1
        total += 1
    if total == 0:
        sys.exit("no samples (was perf recording with call graphs?)")
    width = max(len(name) for name in counts)
    header = f"{'component':<{width}}  share"
    if args.us_per_tx:
        header += "  µs/tx"
    print(header)
    for name, count in sorted(counts.items(), key=lambda item: -item[1]):
        share = count / total
        row = f"{name:<{width}}  {share * 100:5.1f}%"
        if args.us_per_tx:
            row += f"  {share * args.us_per_tx:5.0f}"
        print(row)
    print(f"({total} samples)")


if __name__ == "__main__":
    main()
