//! Filter and subscription ids as geth makes them: "0x" and 16 random bytes in hex. Random, so
//! that one client cannot guess (and poll or uninstall) another's.

use jsonrpsee::core::traits::IdProvider;
use jsonrpsee::types::SubscriptionId;

pub fn new_id() -> String {
    format!("{:#034x}", rand::random::<u128>())
}

/// jsonrpsee's subscription ids, in the same form.
#[derive(Debug, Clone, Copy, Default)]
pub struct HexIdProvider;

impl IdProvider for HexIdProvider {
    fn next_id(&self) -> SubscriptionId<'static> {
        SubscriptionId::Str(new_id().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_with_sixteen_bytes_and_differ() {
        let a = new_id();
        assert_eq!(a.len(), 34);
        assert!(a.starts_with("0x"));
        assert!(a[2..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, new_id());
    }
}
