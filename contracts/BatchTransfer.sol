// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title railyard batch payouts
/// @notice Pays many recipients in one transaction: native ETH from msg.value, or an ERC-20
/// token pulled from the sender (who approves this contract once). All or nothing: any failed
/// leg reverts the whole settlement, so a settlement is either fully paid or not at all.
/// The contract holds no state and no funds between calls.
interface IERC20 {
    function transferFrom(address from, address to, uint256 value) external returns (bool);
}

contract BatchTransfer {
    error LengthMismatch();
    error ValueMismatch(uint256 expected, uint256 received);
    error TransferFailed(uint256 index);

    function sendEther(address[] calldata recipients, uint256[] calldata amounts) external payable {
        if (recipients.length != amounts.length) revert LengthMismatch();
        uint256 total;
        for (uint256 i; i < recipients.length; ++i) {
            total += amounts[i];
            (bool ok,) = recipients[i].call{value: amounts[i]}("");
            if (!ok) revert TransferFailed(i);
        }
        if (total != msg.value) revert ValueMismatch(total, msg.value);
    }

    function sendToken(IERC20 token, address[] calldata recipients, uint256[] calldata amounts) external {
        if (recipients.length != amounts.length) revert LengthMismatch();
        for (uint256 i; i < recipients.length; ++i) {
            if (!token.transferFrom(msg.sender, recipients[i], amounts[i])) revert TransferFailed(i);
        }
    }
}
