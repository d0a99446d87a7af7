// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// Deployed by Probe with CREATE and CREATE2; holds a value and can self-destruct.
contract Child {
    uint256 public value;

    constructor(uint256 value_) payable {
        value = value_;
    }

    function set(uint256 value_) external {
        value = value_;
    }

    function fail() external pure {
        revert("child failed");
    }

    function destroy(address payable beneficiary) external {
        selfdestruct(beneficiary);
    }

    receive() external payable {}
}

/// Exercises what the executor must get right: reverts with a reason and a custom error,
/// panics, nested calls and their rollback, CREATE/CREATE2, SELFDESTRUCT under Cancun rules,
/// precompiles, block context opcodes, events, and burning gas.
contract Probe {
    error Custom(uint256 code, address who);

    event Stored(uint256 indexed key, uint256 value);
    event Created(address indexed child, bool create2);

    mapping(uint256 => uint256) public slots;
    uint256 public counter;

    constructor() payable {}

    receive() external payable {}

    function store(uint256 key, uint256 value) external {
        slots[key] = value;
        emit Stored(key, value);
    }

    /// Writes only when the slot holds `expected`: a write that no speculative value predicts.
    function bumpIf(uint256 key, uint256 expected) external {
        if (slots[key] == expected) {
            slots[key] = expected + 1;
        }
    }

    function failWithReason(string calldata reason) external pure {
        revert(reason);
    }

    function failWithCustom(uint256 code) external view {
        revert Custom(code, msg.sender);
    }

    function storeThenFail(uint256 key, uint256 value) external {
        slots[key] = value;
        emit Stored(key, value);
        revert("after store");
    }

    function divide(uint256 a, uint256 b) external pure returns (uint256) {
        return a / b;
    }

    /// Writes `n` fresh slots: runs out of gas with a small limit.
    function burn(uint256 n) external {
        for (uint256 i = 0; i < n; i++) {
            slots[1_000_000 + i] = i + 1;
        }
    }

    /// A nested call that reverts is rolled back; the outer frame's own writes stay.
    function nested(address child) external returns (bool ok) {
        counter += 1;
        (ok,) = child.call(abi.encodeWithSignature("fail()"));
        Child(payable(child)).set(counter);
    }

    function create(uint256 value_) external payable returns (address child) {
        child = address(new Child{value: msg.value}(value_));
        emit Created(child, false);
    }

    function create2(bytes32 salt, uint256 value_) external payable returns (address child) {
        child = address(new Child{salt: salt, value: msg.value}(value_));
        emit Created(child, true);
    }

    /// CREATE then SELFDESTRUCT in one transaction: the child is deleted (EIP-6780).
    function createAndDestroy(address payable beneficiary) external payable returns (address child) {
        Child c = new Child{value: msg.value}(7);
        c.destroy(beneficiary);
        child = address(c);
    }

    function destroy(address child, address payable beneficiary) external {
        Child(payable(child)).destroy(beneficiary);
    }

    function recover(bytes32 hash, uint8 v, bytes32 r, bytes32 s) external pure returns (address) {
        return ecrecover(hash, v, r, s);
    }

    function sha(bytes calldata data) external pure returns (bytes32) {
        return sha256(data);
    }

    /// Calls any precompile with raw input.
    function precompile(address target, bytes calldata input) external view returns (bool ok, bytes memory output) {
        (ok, output) = target.staticcall(input);
    }

    function context() external view returns (uint256 chainId, uint256 number, uint256 timestamp, uint256 baseFee, address coinbase) {
        return (block.chainid, block.number, block.timestamp, block.basefee, block.coinbase);
    }

    function codeHash(address account) external view returns (bytes32 hash, uint256 size) {
        hash = account.codehash;
        size = account.code.length;
    }
}
