//! Password hashing with Argon2id.
//!
//! Hashing is deliberately slow (about 40 ms with the default cost on a
//! small machine), so it runs on the runtime's blocking threads, never on
//! the threads that serve connections. Tests and the load generator pick a
//! cheap cost through [`PasswordCost::Fast`]; a stored hash carries its own
//! parameters, so changing the cost never locks anyone out.

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

/// How expensive a new password hash is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PasswordCost {
    /// Argon2id with the crate's recommended parameters.
    #[default]
    Standard,
    /// Minimal memory and one pass: only for tests and benchmarks, where a
    /// login storm should measure the server rather than the hash.
    Fast,
}

impl PasswordCost {
    fn argon2(self) -> Argon2<'static> {
        let params = match self {
            PasswordCost::Standard => Params::default(),
            PasswordCost::Fast => Params::new(8, 1, 1, None)
                .expect("8 KiB, 1 pass, 1 lane are valid Argon2 parameters"),
        };
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }
}

/// Hashes `password` into a PHC string with a fresh random salt.
pub(crate) async fn hash(cost: PasswordCost, password: String) -> Result<String, String> {
    blocking(move || {
        cost.argon2()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| format!("cannot hash password: {e}"))
    })
    .await?
}

/// Whether `password` matches the PHC string `stored`.
pub(crate) async fn verify(password: String, stored: String) -> bool {
    blocking(move || {
        Argon2::default()
            .verify_password(password.as_bytes(), stored.as_str())
            .is_ok()
    })
    .await
    .unwrap_or(false)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("hashing task failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let stored = hash(PasswordCost::Fast, "s3cret 密码".into())
            .await
            .expect("hashes");
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(!stored.contains("s3cret"));
        assert!(verify("s3cret 密码".into(), stored.clone()).await);
        assert!(!verify("s3cret".into(), stored).await);
        assert!(!verify("x".into(), "not a hash".into()).await);
    }
}
