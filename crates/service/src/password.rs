//! Password hashing with Argon2id.
//!
//! Hashing is deliberately slow (about 40 ms with the default cost on a
//! small machine), so it runs on the runtime's blocking threads, never on
//! the threads that serve connections. Tests and the load generator pick a
//! cheap cost through [`PasswordCost::Fast`]; a stored hash carries its own
//! parameters, so changing the cost never locks anyone out.

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::PasswordHash;
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
    let Some(hash) = parse(&stored) else {
        return false;
    };
    if is_cheap(&hash) {
        // A few microseconds of work: handing it to a blocking thread
        // costs more than that in wake-ups and context switches.
        return matches(&password, &hash);
    }
    blocking(move || matches(&password, &hash))
        .await
        .unwrap_or(false)
}

fn parse(stored: &str) -> Option<PasswordHash> {
    PasswordHash::new(stored).ok()
}

fn matches(password: &str, hash: &PasswordHash) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// Work (KiB of memory times passes) below which a check is done on the
/// calling thread: the `Fast` cost (8 × 1) takes about 12 µs on a small
/// machine; the standard cost is thousands of times more.
const INLINE_WORK: u64 = 64;

/// Whether checking against `hash` is cheap enough to do on the async
/// thread that asks for it.
fn is_cheap(hash: &PasswordHash) -> bool {
    Params::try_from(hash)
        .is_ok_and(|params| u64::from(params.m_cost()) * u64::from(params.t_cost()) <= INLINE_WORK)
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

    #[tokio::test]
    async fn only_the_fast_cost_is_checked_on_the_calling_thread() {
        let fast = hash(PasswordCost::Fast, "pw".into()).await.expect("hashes");
        let cheap = |stored: &str| parse(stored).is_some_and(|h| is_cheap(&h));
        assert!(cheap(&fast), "{fast}");
        // The standard cost's parameters, without spending 40 ms on a hash.
        let standard = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaC8rPQ";
        assert!(!cheap(standard));
        assert!(!cheap("not a hash"));
    }
}
