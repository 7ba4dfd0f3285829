//! Password and API-token hashes: parsing stored hash strings, verifying a candidate against
//! them, and making new ones.
//!
//! Owns the four accepted formats: nbgate's own PBKDF2-HMAC-SHA256 PHC strings, the two that
//! Jupyter Server writes (`argon2:$argon2id$...` today, `sha1:<salt>:<hex>` in old configs), so a
//! Jupyter config can be moved behind nbgate without re-hashing, and bcrypt (`$2y$`, `$2b$`,
//! `$2a$`, as `htpasswd -B` writes), so an nginx `auth_basic_user_file` works as nbgate's users
//! file. The other htpasswd formats (apr1-MD5, `{SHA}`, crypt) are refused by name as weak. Also
//! owns random secrets for first start (generated password, API tokens).
//!
//! Must not: log or echo a password, a token or hash material (errors and `Debug` name the
//! problem, never the input); decide policy about users or sessions; run on the async executor
//! (every `verify` costs tens to hundreds of milliseconds of CPU by design, so callers use
//! `spawn_blocking`).

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use base64::Engine as _;
use pbkdf2::password_hash::{self, Ident, PasswordHash, PasswordHasher as _, Salt, SaltString};
use rand::{Rng as _, RngCore as _};
use sha1::{Digest as _, Sha1};
use subtle::ConstantTimeEq as _;

/// PBKDF2-HMAC-SHA256 iterations for new hashes: the OWASP Password Storage Cheat Sheet figure
/// (2023) for this PRF.
pub const DEFAULT_ITERATIONS: u32 = 600_000;

/// Fewest PBKDF2 iterations a stored hash may use. A hash with fewer is refused at load time
/// rather than accepted silently: a leaked config with a 1 000-iteration hash is cracked offline
/// in minutes.
pub const MIN_ITERATIONS: u32 = 100_000;

/// Most PBKDF2 iterations a stored hash may use. Every login attempt, including an
/// unauthenticated attacker's, pays this cost; a typo of a few extra zeros would otherwise let a
/// handful of requests pin every core.
pub const MAX_ITERATIONS: u32 = 10_000_000;

/// Most memory (KiB) an Argon2 hash may ask for per verification (1 GiB). Same reason as
/// [`MAX_ITERATIONS`]: the cost is paid per unauthenticated login attempt, and memory runs out
/// sooner than CPU. Jupyter writes `m=10240` (10 MiB).
pub const MAX_ARGON2_MEMORY_KIB: u32 = 1024 * 1024;

/// Most Argon2 passes a hash may ask for. Jupyter writes `t=10`.
pub const MAX_ARGON2_TIME_COST: u32 = 100;

/// Fewest bcrypt cost (log2 of the rounds) a stored hash may use: `htpasswd -B`'s default, so an
/// htpasswd file works unchanged. Like [`MIN_ITERATIONS`], a cheaper hash is refused rather than
/// accepted silently: public GPU benchmarks put cost 5 in the same range of guesses per second
/// as PBKDF2 at [`MIN_ITERATIONS`], and cost 4 at twice that.
pub const MIN_BCRYPT_COST: u32 = 5;

/// Most bcrypt cost a stored hash may use: `htpasswd -C`'s own maximum. Each step doubles the
/// work, and every login attempt, including an unauthenticated attacker's, pays it (the format
/// allows 31, more than a day per attempt).
pub const MAX_BCRYPT_COST: u32 = 17;

/// Fewest characters (Unicode scalar values, not bytes) a new password may have.
pub const MIN_PASSWORD_LEN: usize = 8;

/// Bytes of random salt in new PBKDF2 hashes (the PHC recommendation; 128 bits makes
/// precomputed tables useless).
const SALT_LEN: usize = 16;

/// Bytes of PBKDF2 output in new hashes: one SHA-256 block, the most that costs no extra work.
const OUTPUT_LEN: usize = 32;

/// Random bytes in an API token (256 bits: far past online or offline guessing).
const TOKEN_BYTES: usize = 32;

/// Characters in a generated password: 20 from a 55-symbol alphabet is about 115 bits.
const GENERATED_PASSWORD_LEN: usize = 20;

/// Alphabet for generated passwords: letters and digits without the look-alikes `0 O o 1 I l i`,
/// so a password read off a terminal or a log line is typed correctly the first time.
const UNAMBIGUOUS_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghjkmnpqrstuvwxyz23456789";

/// What Jupyter puts in front of an Argon2 PHC string.
const JUPYTER_ARGON2_PREFIX: &str = "argon2:";

/// What Jupyter puts in front of a legacy salted SHA-1 hash.
const JUPYTER_SHA1_PREFIX: &str = "sha1:";

/// Bytes in a SHA-1 digest.
const SHA1_LEN: usize = 20;

/// Characters in a bcrypt string: `$2y$NN$` (7), 22 of salt and 31 of hash.
const BCRYPT_LEN: usize = 60;

/// How to re-hash a password that is stored in a refused htpasswd format.
const REHASH_HINT: &str =
    "re-hash the password with `nbgate hash-password` (or `htpasswd -B` for bcrypt)";

/// Algorithm names that may be named back in an error. The input itself is never echoed, because
/// a plaintext password pasted into the hash field would then end up in a log; only a name from
/// this fixed list is.
const KNOWN_ALGORITHMS: &[&str] = &[
    "pbkdf2",
    "pbkdf2-sha1",
    "pbkdf2-sha512",
    "argon2id",
    "argon2i",
    "argon2d",
    "scrypt",
    "bcrypt",
    "2a",
    "2b",
    "2x",
    "2y",
    "1",
    "5",
    "6",
    "md5",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "sha3_224",
    "sha3_256",
    "sha3_384",
    "sha3_512",
    "blake2b",
    "blake2s",
];

/// Why a hash string was refused, or a new password or hash could not be made.
///
/// Messages name the format and the problem, never the input: the string may be a plaintext
/// password pasted into the wrong field.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The string matches none of the accepted formats.
    #[error(
        "unrecognised password hash format: expected \"$pbkdf2-sha256$i=...,l=32$<salt>$<hash>\" \
         (from `nbgate hash-password`), \"argon2:$argon2id$...\" or \"sha1:<salt>:<hex digest>\" \
         (from `jupyter server password`), or bcrypt \"$2y$...\" (from `htpasswd -B`)"
    )]
    UnknownFormat,

    /// A recognisable hash of an algorithm nbgate does not verify.
    #[error(
        "unsupported password hash algorithm \"{found}\": use pbkdf2-sha256 (`nbgate hash-password`), \
         Jupyter's argon2 or sha1 forms, or bcrypt (`htpasswd -B`)"
    )]
    UnsupportedAlgorithm {
        /// The algorithm's name, taken from a fixed list, never from the input.
        found: &'static str,
    },

    /// The PHC string could not be parsed (bad field count, bad Base64, bad parameter ...).
    #[error("malformed {format} password hash")]
    Malformed {
        /// Which format was being parsed.
        format: &'static str,
        /// The parser's reason; it names the fault, not the hash text.
        #[source]
        source: PhcError,
    },

    /// A PHC string lacks a parameter nbgate will not guess.
    #[error("{format} password hash lacks the \"{name}\" parameter")]
    MissingParameter {
        /// Which format was being parsed.
        format: &'static str,
        /// The missing parameter.
        name: &'static str,
    },

    /// A PHC string carries a parameter nbgate cannot honour (an Argon2 `keyid` needs a secret
    /// nbgate does not have).
    #[error("{format} password hash has an unsupported parameter; only {allowed} are accepted")]
    UnsupportedParameter {
        /// Which format was being parsed.
        format: &'static str,
        /// The parameters that are accepted.
        allowed: &'static str,
    },

    /// PBKDF2 iteration count below [`MIN_ITERATIONS`].
    #[error(
        "pbkdf2-sha256 password hash uses {found} iterations; at least {min} are required \
         (re-hash with `nbgate hash-password`)"
    )]
    TooFewIterations {
        /// Iterations in the stored hash.
        found: u32,
        /// The minimum.
        min: u32,
    },

    /// PBKDF2 iteration count above [`MAX_ITERATIONS`].
    #[error(
        "pbkdf2-sha256 password hash uses {found} iterations; at most {max} are accepted, since \
         every login attempt pays that cost"
    )]
    TooManyIterations {
        /// Iterations in the stored hash.
        found: u32,
        /// The maximum.
        max: u32,
    },

    /// Argon2 cost above [`MAX_ARGON2_MEMORY_KIB`] or [`MAX_ARGON2_TIME_COST`].
    #[error(
        "argon2 password hash asks for m={memory_kib} KiB, t={time_cost}; at most m={max_memory_kib}, \
         t={max_time_cost} are accepted, since every login attempt pays that cost"
    )]
    Argon2CostTooHigh {
        /// `m` in the stored hash.
        memory_kib: u32,
        /// `t` in the stored hash.
        time_cost: u32,
        /// [`MAX_ARGON2_MEMORY_KIB`].
        max_memory_kib: u32,
        /// [`MAX_ARGON2_TIME_COST`].
        max_time_cost: u32,
    },

    /// A Jupyter `sha1:<salt>:<hex>` string with a bad part.
    #[error("malformed Jupyter sha1 password hash: {reason}")]
    MalformedSha1 {
        /// Which part is wrong.
        reason: &'static str,
    },

    /// A htpasswd hash in a format that is fast to guess offline: nbgate will not verify it, and
    /// says why and how to replace it.
    #[error("{scheme} password hash (htpasswd) is refused as weak: {why}; {hint}", hint = REHASH_HINT)]
    WeakHtpasswdHash {
        /// The format's name (`apr1-md5`, `{SHA}`, ...).
        scheme: &'static str,
        /// Why it is weak.
        why: &'static str,
    },

    /// A bcrypt string with a bad part.
    #[error("malformed bcrypt password hash: {reason}")]
    MalformedBcrypt {
        /// Which part is wrong.
        reason: &'static str,
    },

    /// bcrypt cost outside [`MIN_BCRYPT_COST`]..=[`MAX_BCRYPT_COST`].
    #[error(
        "bcrypt password hash has cost {found}; {min} to {max} are accepted (below is fast to \
         guess, above makes every login attempt too costly); {hint}",
        hint = REHASH_HINT
    )]
    BcryptCostOutOfRange {
        /// Cost in the stored hash.
        found: u32,
        /// [`MIN_BCRYPT_COST`].
        min: u32,
        /// [`MAX_BCRYPT_COST`].
        max: u32,
    },

    /// A new password is empty.
    #[error("the password is empty")]
    EmptyPassword,

    /// A new password is shorter than [`MIN_PASSWORD_LEN`] characters.
    #[error("the password is too short: at least {min} characters are required")]
    PasswordTooShort {
        /// [`MIN_PASSWORD_LEN`].
        min: usize,
    },

    /// Computing a new hash failed (only with parameters outside what the library accepts).
    #[error("could not compute the password hash")]
    Hashing(#[source] PhcError),
}

/// An error from the PHC string library, wrapped so that it can be a `#[source]` (the library
/// implements `std::error::Error` only with a feature this crate does not enable).
#[derive(Debug)]
pub struct PhcError(password_hash::Error);

impl fmt::Display for PhcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for PhcError {}

/// A parsed stored hash of a password or API token.
///
/// `Debug` shows the algorithm and cost only: salt and hash are withheld, since a hash in a log
/// line can be cracked offline.
#[derive(Clone)]
pub enum StoredHash {
    /// nbgate's own format: PBKDF2-HMAC-SHA256 as a PHC string.
    Pbkdf2(Pbkdf2Hash),
    /// Jupyter's current format: `argon2:` followed by an argon2-cffi PHC string.
    JupyterArgon2(Argon2Hash),
    /// Jupyter's legacy format: `sha1:<salt>:<hex of sha1(password_utf8 || salt_ascii)>`.
    JupyterSha1(JupyterSha1Hash),
    /// bcrypt as `htpasswd -B` (and most other tools) write it: `$2y$NN$<salt><hash>`.
    Bcrypt(BcryptHash),
}

/// The parts of a PBKDF2-HMAC-SHA256 PHC string.
#[derive(Clone)]
pub struct Pbkdf2Hash {
    /// Iterations, within [`MIN_ITERATIONS`]..=[`MAX_ITERATIONS`].
    iterations: u32,
    /// Salt as it appears in the string (B64); PBKDF2 runs over its decoded bytes, and the
    /// library wants it in this form.
    salt_b64: String,
    /// The derived key.
    hash: Vec<u8>,
}

/// The parts of an Argon2 PHC string.
#[derive(Clone)]
pub struct Argon2Hash {
    /// Argon2 variant (argon2-cffi writes `argon2id`).
    algorithm: argon2::Algorithm,
    /// Argon2 version (argon2-cffi writes `v=19`).
    version: argon2::Version,
    /// Cost parameters and output length.
    params: argon2::Params,
    /// Decoded salt.
    salt: Vec<u8>,
    /// The derived key.
    hash: Vec<u8>,
}

/// The parts of a Jupyter legacy SHA-1 hash.
#[derive(Clone)]
pub struct JupyterSha1Hash {
    /// ASCII salt, hashed as its text (Jupyter writes 12 hex digits).
    salt: String,
    /// SHA-1 digest.
    digest: [u8; SHA1_LEN],
}

/// A bcrypt string, checked when parsed.
#[derive(Clone)]
pub struct BcryptHash {
    /// Within [`MIN_BCRYPT_COST`]..=[`MAX_BCRYPT_COST`].
    cost: u32,
    /// The whole string, which is what the `bcrypt` crate verifies against. Its format was
    /// checked when parsed, so verification cannot fail on it.
    encoded: String,
}

impl fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoredHash::Pbkdf2(h) => f
                .debug_struct("Pbkdf2")
                .field("iterations", &h.iterations)
                .finish_non_exhaustive(),
            StoredHash::JupyterArgon2(h) => f
                .debug_struct("JupyterArgon2")
                .field("algorithm", &h.algorithm)
                .field("m_cost", &h.params.m_cost())
                .field("t_cost", &h.params.t_cost())
                .field("p_cost", &h.params.p_cost())
                .finish_non_exhaustive(),
            StoredHash::JupyterSha1(_) => f.debug_struct("JupyterSha1").finish_non_exhaustive(),
            StoredHash::Bcrypt(h) => f
                .debug_struct("Bcrypt")
                .field("cost", &h.cost)
                .finish_non_exhaustive(),
        }
    }
}

impl fmt::Debug for Pbkdf2Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pbkdf2Hash")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Argon2Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Argon2Hash")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for BcryptHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BcryptHash")
            .field("cost", &self.cost)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for JupyterSha1Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JupyterSha1Hash").finish_non_exhaustive()
    }
}

impl FromStr for StoredHash {
    type Err = PasswordError;

    /// Parses any accepted format; surrounding whitespace (a trailing newline from a file) is
    /// ignored.
    ///
    /// # Errors
    /// A [`PasswordError`] naming the format and the fault, never echoing the input.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(phc) = s.strip_prefix(JUPYTER_ARGON2_PREFIX) {
            return parse_argon2(phc).map(StoredHash::JupyterArgon2);
        }
        if let Some(rest) = s.strip_prefix(JUPYTER_SHA1_PREFIX) {
            return parse_sha1(rest).map(StoredHash::JupyterSha1);
        }
        if let Some(weak) = weak_htpasswd(s) {
            return Err(weak);
        }
        if let Some(rest) = s.strip_prefix('$') {
            let ident = rest.split('$').next().unwrap_or_default();
            if ident == pbkdf2::Algorithm::Pbkdf2Sha256.as_str() {
                return parse_pbkdf2(s).map(StoredHash::Pbkdf2);
            }
            if matches!(ident, "2a" | "2b" | "2y") {
                return parse_bcrypt(s).map(StoredHash::Bcrypt);
            }
            return Err(unsupported_or_unknown(ident));
        }
        // Jupyter's `passwd_check` accepts `<any hashlib name>:<salt>:<hex>`.
        match s.split_once(':') {
            Some((name, _)) => Err(unsupported_or_unknown(name)),
            None => Err(PasswordError::UnknownFormat),
        }
    }
}

impl StoredHash {
    /// Whether `password` is the one this hash was made from.
    ///
    /// The derived bytes are compared in constant time (`subtle`), so response timing tells an
    /// attacker nothing about how many leading bytes of a guess's hash were right. Costs what
    /// the stored parameters say (about 0.3 s for the default PBKDF2 in a release build): call
    /// it from `spawn_blocking`.
    pub fn verify(&self, password: &str) -> bool {
        match self {
            StoredHash::Pbkdf2(h) => h.verify(password.as_bytes()),
            StoredHash::JupyterArgon2(h) => h.verify(password.as_bytes()),
            StoredHash::JupyterSha1(h) => h.verify(password.as_bytes()),
            StoredHash::Bcrypt(h) => h.verify(password.as_bytes()),
        }
    }

    /// True for the forms taken over from other tools (Jupyter's, htpasswd's bcrypt), so the
    /// caller can log a hint to re-hash with `nbgate hash-password`: sha1 is fast to crack, and
    /// argon2 and bcrypt cost a different time than nbgate's own hashes, so they break the
    /// equal-time answer for unknown users.
    pub fn is_legacy(&self) -> bool {
        match self {
            StoredHash::Pbkdf2(_) => false,
            StoredHash::JupyterArgon2(_) | StoredHash::JupyterSha1(_) | StoredHash::Bcrypt(_) => {
                true
            }
        }
    }
}

impl Pbkdf2Hash {
    fn verify(&self, password: &[u8]) -> bool {
        let derived = Salt::from_b64(&self.salt_b64).and_then(|salt| {
            let params = pbkdf2::Params {
                rounds: self.iterations,
                output_length: self.hash.len(),
            };
            pbkdf2::Pbkdf2.hash_password_customized(
                password,
                Some(pbkdf2::Algorithm::Pbkdf2Sha256.ident()),
                None,
                params,
                salt,
            )
        });
        match derived.map(|phc| phc.hash) {
            Ok(Some(out)) => out.as_bytes().ct_eq(&self.hash).into(),
            // Parsing checked salt and length, so this is unreachable; refuse rather than panic
            // on the request path.
            Ok(None) | Err(_) => {
                tracing::error!("pbkdf2 verification failed on a hash that parsed");
                false
            }
        }
    }
}

impl Argon2Hash {
    fn verify(&self, password: &[u8]) -> bool {
        let argon = argon2::Argon2::new(self.algorithm, self.version, self.params.clone());
        let mut derived = vec![0u8; self.hash.len()];
        match argon.hash_password_into(password, &self.salt, &mut derived) {
            Ok(()) => derived.ct_eq(&self.hash).into(),
            // Parsing built these parameters, so this is unreachable; refuse rather than panic.
            Err(err) => {
                tracing::error!(%err, "argon2 verification failed on a hash that parsed");
                false
            }
        }
    }
}

impl JupyterSha1Hash {
    fn verify(&self, password: &[u8]) -> bool {
        // jupyter_server/auth/security.py passwd_check:
        // sha1(passphrase.encode("utf-8") + salt.encode("ascii")).hexdigest()
        let derived = Sha1::new()
            .chain_update(password)
            .chain_update(self.salt.as_bytes())
            .finalize();
        derived.as_slice().ct_eq(&self.digest).into()
    }
}

impl BcryptHash {
    fn verify(&self, password: &[u8]) -> bool {
        // The crate compares the derived bytes with `subtle::ConstantTimeEq`, as the other
        // formats here do. Passwords beyond 72 bytes are truncated there, as every bcrypt
        // implementation (htpasswd's included) does, so a hash made elsewhere still verifies.
        match bcrypt::verify(password, &self.encoded) {
            Ok(ok) => ok,
            // Parsing checked the format and the cost, so this is unreachable; refuse rather
            // than panic on the request path.
            Err(err) => {
                tracing::error!(%err, "bcrypt verification failed on a hash that parsed");
                false
            }
        }
    }
}

/// The htpasswd formats nbgate refuses, recognised by their shape so the error can say which
/// one it is and why it is weak. `None` for anything else.
fn weak_htpasswd(s: &str) -> Option<PasswordError> {
    let weak = |scheme, why| Some(PasswordError::WeakHtpasswdHash { scheme, why });
    if s.starts_with("$apr1$") {
        return weak(
            "apr1-md5",
            "1000 rounds of MD5, tens of millions of guesses per second on one GPU",
        );
    }
    if s.starts_with("$1$") {
        return weak(
            "md5-crypt",
            "1000 rounds of MD5, tens of millions of guesses per second on one GPU",
        );
    }
    if s.starts_with("{SHA}") {
        return weak(
            "{SHA}",
            "one unsalted SHA-1, open to precomputed tables and billions of guesses per second",
        );
    }
    // Traditional crypt(3): 2 characters of salt and 11 of hash from `./0-9A-Za-z`.
    let crypt_alphabet = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'/';
    if s.len() == 13 && s.bytes().all(crypt_alphabet) {
        return weak(
            "crypt (DES)",
            "only the first 8 characters of the password count, at billions of guesses per second on one GPU",
        );
    }
    None
}

/// Names `ident` back if it is a known algorithm, otherwise says only that the format is unknown.
fn unsupported_or_unknown(ident: &str) -> PasswordError {
    match KNOWN_ALGORITHMS.iter().find(|known| **known == ident) {
        Some(found) => PasswordError::UnsupportedAlgorithm { found },
        None => PasswordError::UnknownFormat,
    }
}

fn malformed(format: &'static str) -> impl Fn(password_hash::Error) -> PasswordError {
    move |err| PasswordError::Malformed {
        format,
        source: PhcError(err),
    }
}

fn parse_pbkdf2(s: &str) -> Result<Pbkdf2Hash, PasswordError> {
    const FORMAT: &str = "pbkdf2-sha256";
    let phc = PasswordHash::new(s).map_err(malformed(FORMAT))?;
    // The library would default a missing `i` to its own figure; a hash must say what it used.
    let iterations = phc
        .params
        .get_decimal("i")
        .ok_or(PasswordError::MissingParameter {
            format: FORMAT,
            name: "i",
        })?;
    // Also checks that `l` matches the hash length and that there is no version field.
    pbkdf2::Params::try_from(&phc).map_err(malformed(FORMAT))?;
    if iterations < MIN_ITERATIONS {
        return Err(PasswordError::TooFewIterations {
            found: iterations,
            min: MIN_ITERATIONS,
        });
    }
    if iterations > MAX_ITERATIONS {
        return Err(PasswordError::TooManyIterations {
            found: iterations,
            max: MAX_ITERATIONS,
        });
    }
    let salt = phc.salt.ok_or(PasswordError::MissingParameter {
        format: FORMAT,
        name: "salt",
    })?;
    let mut salt_buf = [0u8; Salt::MAX_LENGTH];
    salt.decode_b64(&mut salt_buf).map_err(malformed(FORMAT))?;
    let hash = phc.hash.ok_or(PasswordError::MissingParameter {
        format: FORMAT,
        name: "hash",
    })?;
    Ok(Pbkdf2Hash {
        iterations,
        salt_b64: salt.as_str().to_owned(),
        hash: hash.as_bytes().to_vec(),
    })
}

fn parse_argon2(s: &str) -> Result<Argon2Hash, PasswordError> {
    const FORMAT: &str = "Jupyter argon2";
    let phc = PasswordHash::new(s).map_err(malformed(FORMAT))?;
    let algorithm = argon2::Algorithm::try_from(phc.algorithm)
        .map_err(|_| unsupported_or_unknown(phc.algorithm.as_str()))?;
    // A missing version means 0x10 by the PHC spec but 0x13 to the argon2 crate; argon2-cffi
    // always writes it, so refuse the ambiguity instead of picking one.
    let version = phc.version.ok_or(PasswordError::MissingParameter {
        format: FORMAT,
        name: "v",
    })?;
    let version = argon2::Version::try_from(version).map_err(|_| PasswordError::Malformed {
        format: FORMAT,
        source: PhcError(password_hash::Error::Version),
    })?;
    // `keyid` and `data` would need a secret or context that argon2-cffi never sets.
    if phc
        .params
        .iter()
        .any(|(name, _)| !matches!(name.as_str(), "m" | "t" | "p"))
    {
        return Err(PasswordError::UnsupportedParameter {
            format: FORMAT,
            allowed: "m, t and p",
        });
    }
    for name in ["m", "t", "p"] {
        if phc.params.get(name).is_none() {
            return Err(PasswordError::MissingParameter {
                format: FORMAT,
                name,
            });
        }
    }
    let params = argon2::Params::try_from(&phc).map_err(malformed(FORMAT))?;
    if params.m_cost() > MAX_ARGON2_MEMORY_KIB || params.t_cost() > MAX_ARGON2_TIME_COST {
        return Err(PasswordError::Argon2CostTooHigh {
            memory_kib: params.m_cost(),
            time_cost: params.t_cost(),
            max_memory_kib: MAX_ARGON2_MEMORY_KIB,
            max_time_cost: MAX_ARGON2_TIME_COST,
        });
    }
    let salt = phc.salt.ok_or(PasswordError::MissingParameter {
        format: FORMAT,
        name: "salt",
    })?;
    let mut salt_buf = [0u8; Salt::MAX_LENGTH];
    let salt = salt
        .decode_b64(&mut salt_buf)
        .map_err(malformed(FORMAT))?
        .to_vec();
    let hash = phc.hash.ok_or(PasswordError::MissingParameter {
        format: FORMAT,
        name: "hash",
    })?;
    Ok(Argon2Hash {
        algorithm,
        version,
        params,
        salt,
        hash: hash.as_bytes().to_vec(),
    })
}

fn parse_sha1(rest: &str) -> Result<JupyterSha1Hash, PasswordError> {
    let (salt, hex_digest) = rest.split_once(':').ok_or(PasswordError::MalformedSha1 {
        reason: "expected sha1:<salt>:<hex digest>",
    })?;
    // Jupyter hashes the salt with `salt.encode("ascii")`; anything else never verified there.
    if !salt.is_ascii() {
        return Err(PasswordError::MalformedSha1 {
            reason: "the salt must be ASCII",
        });
    }
    let mut digest = [0u8; SHA1_LEN];
    hex::decode_to_slice(hex_digest, &mut digest).map_err(|_| PasswordError::MalformedSha1 {
        reason: "the digest must be 40 hexadecimal digits",
    })?;
    Ok(JupyterSha1Hash {
        salt: salt.to_owned(),
        digest,
    })
}

/// Checks a `$2a$`/`$2b$`/`$2y$` string: length, cost bounds and Base64, so that verification
/// cannot fail later.
fn parse_bcrypt(s: &str) -> Result<BcryptHash, PasswordError> {
    let malformed = |reason| PasswordError::MalformedBcrypt { reason };
    if s.len() != BCRYPT_LEN || !s.is_ascii() {
        return Err(malformed(
            "expected 60 characters: $2y$<cost>$<salt and hash>",
        ));
    }
    let (cost, rest) = s[4..]
        .split_once('$')
        .ok_or(malformed("expected $2y$<cost>$<salt and hash>"))?;
    if cost.len() != 2 || !cost.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("the cost must be two decimal digits"));
    }
    let cost: u32 = cost
        .parse()
        .map_err(|_| malformed("the cost must be two decimal digits"))?;
    if !(MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost) {
        return Err(PasswordError::BcryptCostOutOfRange {
            found: cost,
            min: MIN_BCRYPT_COST,
            max: MAX_BCRYPT_COST,
        });
    }
    let (salt, hash) = rest.split_at(22);
    let mut salt_buf = [0u8; 16];
    let mut hash_buf = [0u8; 23];
    bcrypt::BASE_64
        .decode_slice(salt, &mut salt_buf)
        .map_err(|_| malformed("the salt is not bcrypt Base64"))?;
    bcrypt::BASE_64
        .decode_slice(hash, &mut hash_buf)
        .map_err(|_| malformed("the hash is not bcrypt Base64"))?;
    Ok(BcryptHash {
        cost,
        encoded: s.to_owned(),
    })
}

/// Hashes `password` for storage with PBKDF2-HMAC-SHA256, [`DEFAULT_ITERATIONS`] and a fresh
/// 16-byte random salt, as a PHC string (`$pbkdf2-sha256$i=600000,l=32$<salt>$<hash>`).
///
/// Applies no password policy: call [`check_new_password`] first for user-chosen passwords.
///
/// # Errors
/// [`PasswordError::Hashing`] only if the hashing library refuses its inputs.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    hash_password_with_iterations(password, DEFAULT_ITERATIONS)
}

/// [`hash_password`] with a chosen iteration count, for tests and benches that cannot spend the
/// default cost per hash.
///
/// # Errors
/// [`PasswordError::TooFewIterations`] / [`PasswordError::TooManyIterations`] outside
/// [`MIN_ITERATIONS`]..=[`MAX_ITERATIONS`], so that every hash made here also parses;
/// [`PasswordError::Hashing`] if the hashing library refuses its inputs.
pub fn hash_password_with_iterations(
    password: &str,
    iterations: u32,
) -> Result<String, PasswordError> {
    if iterations < MIN_ITERATIONS {
        return Err(PasswordError::TooFewIterations {
            found: iterations,
            min: MIN_ITERATIONS,
        });
    }
    if iterations > MAX_ITERATIONS {
        return Err(PasswordError::TooManyIterations {
            found: iterations,
            max: MAX_ITERATIONS,
        });
    }
    let mut salt = [0u8; SALT_LEN];
    // ThreadRng is a CSPRNG reseeded from the OS: salts cannot be predicted, so an attacker
    // cannot precompute tables for them.
    rand::rng().fill_bytes(&mut salt);
    let hashing = |err| PasswordError::Hashing(PhcError(err));
    let salt = SaltString::encode_b64(&salt).map_err(hashing)?;
    let params = pbkdf2::Params {
        rounds: iterations,
        output_length: OUTPUT_LEN,
    };
    let ident: Ident<'static> = pbkdf2::Algorithm::Pbkdf2Sha256.ident();
    let phc = pbkdf2::Pbkdf2
        .hash_password_customized(password.as_bytes(), Some(ident), None, params, &salt)
        .map_err(hashing)?;
    Ok(phc.to_string())
}

/// Refuses a new password that is empty or shorter than [`MIN_PASSWORD_LEN`] characters
/// (counted as Unicode scalar values, so `"pässwört"` is 8).
///
/// # Errors
/// [`PasswordError::EmptyPassword`] or [`PasswordError::PasswordTooShort`].
pub fn check_new_password(password: &str) -> Result<(), PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::EmptyPassword);
    }
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(PasswordError::PasswordTooShort {
            min: MIN_PASSWORD_LEN,
        });
    }
    Ok(())
}

/// A hash of a random, discarded password with [`DEFAULT_ITERATIONS`], made on first use.
///
/// Verify against it when the user name is unknown, so an unknown user costs the same time as a
/// wrong password and response timing does not reveal which user names exist. The equality only
/// holds for users with nbgate's own hashes: a Jupyter argon2 or sha1 hash, or a bcrypt one, takes
/// a different time.
pub fn dummy_hash() -> &'static StoredHash {
    static DUMMY: OnceLock<StoredHash> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_password(&generate_password())
            .expect("hashing a generated password with the default parameters cannot fail")
            .parse()
            .expect("a hash made by hash_password always parses")
    })
}

/// A new API token: 32 random bytes as URL-safe Base64 without padding (43 characters).
///
/// Store it with [`hash_password`] like a password; show the plain token once.
pub fn generate_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A strong random password of 20 characters from an alphabet without look-alike characters,
/// for the password printed at first start.
pub fn generate_password() -> String {
    let mut rng = rand::rng();
    (0..GENERATED_PASSWORD_LEN)
        .map(|_| {
            // random_range is uniform (no modulo bias), so every symbol is equally likely.
            char::from(UNAMBIGUOUS_ALPHABET[rng.random_range(0..UNAMBIGUOUS_ALPHABET.len())])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made once with:
    /// `/tmp/venvtest/bin/python -c 'from jupyter_server.auth.security import passwd;
    ///  print(passwd("jupyter-vector-pw"))'` (jupyter_server 2.21.1, argon2-cffi 25.1.0).
    const JUPYTER_ARGON2_VECTOR: &str = "argon2:$argon2id$v=19$m=10240,t=10,p=8$RhlazW319f4Mqiy8X4vuZA$uBHw2ltFT82SKrLwQ1fD22qg1c8Vscx6Unxt/UUn4/M";

    /// Made once with:
    /// `/tmp/venvtest/bin/python -c 'from jupyter_server.auth.security import passwd;
    ///  print(passwd("jupyter-vector-pw", "sha1"))'` (jupyter_server 2.21.1).
    const JUPYTER_SHA1_VECTOR: &str = "sha1:77240d5b9bbc:7a16d51a68bb5bf39fa9bbac2d2558c88674a135";

    const VECTOR_PASSWORD: &str = "jupyter-vector-pw";

    /// Made once with `htpasswd -nbB vector-user htpasswd-vector-pw` (apache2-utils 2.4.71,
    /// Debian 12): the form an nginx `auth_basic_user_file` holds.
    const HTPASSWD_BCRYPT_VECTOR: &str =
        "$2y$05$N4iJx/eSyTdUFhsZ/ZO7/u2OiQSv.F6lv699t/WoZvKJFrlwBEaTO";

    /// The same password with `htpasswd -nbm` (apr1-MD5, htpasswd's default), `-nbs` ({SHA})
    /// and `-nbd` (crypt, which keeps 8 characters).
    const HTPASSWD_APR1_VECTOR: &str = "$apr1$owjFTuIq$PaOYiiKDtFuTEpM.7RQ4o.";
    const HTPASSWD_SHA_VECTOR: &str = "{SHA}eiYb9tpumeAToEHU+QSPK08CN5Y=";
    const HTPASSWD_CRYPT_VECTOR: &str = "WkkzSxfSBaCOI";

    const HTPASSWD_VECTOR_PASSWORD: &str = "htpasswd-vector-pw";

    /// The docstring vector in jupyter_server/auth/security.py (`passwd_check`).
    const JUPYTER_DOCSTRING_SHA1: &str =
        "sha1:0e112c3ddfce:a68df677475c2b47b6e86d0467eec97ac5f4b85a";

    fn fast_hash(password: &str) -> StoredHash {
        hash_password_with_iterations(password, MIN_ITERATIONS)
            .expect("hashing with MIN_ITERATIONS succeeds")
            .parse()
            .expect("own hash parses")
    }

    #[test]
    fn hash_password_round_trips_through_phc_string() {
        let phc = hash_password_with_iterations("correct horse", MIN_ITERATIONS).unwrap();
        assert!(phc.starts_with("$pbkdf2-sha256$i=100000,l=32$"), "{phc}");
        let stored: StoredHash = phc.parse().unwrap();
        assert!(stored.verify("correct horse"));
        assert!(!stored.is_legacy());
    }

    #[test]
    fn hash_password_uses_default_iterations() {
        let phc = hash_password("same password").unwrap();
        assert!(phc.starts_with("$pbkdf2-sha256$i=600000,l=32$"), "{phc}");
    }

    #[test]
    fn hash_password_uses_fresh_salt_each_time() {
        let a = hash_password_with_iterations("same password", MIN_ITERATIONS).unwrap();
        let b = hash_password_with_iterations("same password", MIN_ITERATIONS).unwrap();
        assert_ne!(a, b, "two hashes of one password must differ by salt");
    }

    #[test]
    fn verify_rejects_wrong_password_for_pbkdf2_hash() {
        let stored = fast_hash("correct horse");
        assert!(!stored.verify("correct horsf"));
        assert!(!stored.verify(""));
    }

    #[test]
    fn verify_accepts_non_ascii_password_for_pbkdf2_hash() {
        let stored = fast_hash("pässwört 🐴");
        assert!(stored.verify("pässwört 🐴"));
        assert!(!stored.verify("passwort 🐴"));
    }

    #[test]
    fn hash_password_with_iterations_refuses_counts_that_would_not_parse() {
        assert!(matches!(
            hash_password_with_iterations("x", 1_000),
            Err(PasswordError::TooFewIterations { found: 1_000, .. })
        ));
        assert!(matches!(
            hash_password_with_iterations("x", MAX_ITERATIONS + 1),
            Err(PasswordError::TooManyIterations { .. })
        ));
    }

    #[test]
    fn parse_rejects_unknown_prefix_without_echoing_it() {
        let err = "hunter2-plaintext".parse::<StoredHash>().unwrap_err();
        assert!(matches!(err, PasswordError::UnknownFormat));
        let err = "hunter2:plain:text".parse::<StoredHash>().unwrap_err();
        assert!(matches!(err, PasswordError::UnknownFormat));
        assert!(!format!("{err} {err:?}").contains("hunter2"));
    }

    #[test]
    fn parse_rejects_other_phc_algorithms_by_name() {
        let other = "$pbkdf2-sha512$i=600000,l=64$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA";
        let err = other.parse::<StoredHash>().unwrap_err();
        assert!(matches!(
            err,
            PasswordError::UnsupportedAlgorithm {
                found: "pbkdf2-sha512"
            }
        ));
        assert!(err.to_string().contains("pbkdf2-sha512"), "{err}");
        let err = "sha256:abc:0123".parse::<StoredHash>().unwrap_err();
        assert!(matches!(
            err,
            PasswordError::UnsupportedAlgorithm { found: "sha256" }
        ));
    }

    #[test]
    fn parse_rejects_bare_argon2_without_jupyter_prefix() {
        let bare = JUPYTER_ARGON2_VECTOR
            .strip_prefix(JUPYTER_ARGON2_PREFIX)
            .unwrap();
        assert!(matches!(
            bare.parse::<StoredHash>(),
            Err(PasswordError::UnsupportedAlgorithm { found: "argon2id" })
        ));
    }

    #[test]
    fn parse_rejects_bad_base64_with_clear_error() {
        let phc = hash_password_with_iterations("pw", MIN_ITERATIONS).unwrap();
        let (head, _hash) = phc.rsplit_once('$').unwrap();
        let bad = format!("{head}$!!not*base64!!");
        let err = bad.parse::<StoredHash>().unwrap_err();
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            matches!(
                err,
                PasswordError::Malformed {
                    format: "pbkdf2-sha256",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("malformed pbkdf2-sha256"), "{err}");
        assert!(
            source.as_deref().is_some_and(|s| s.contains("Base64")),
            "the parser's reason is kept as source: {source:?}"
        );
    }

    #[test]
    fn parse_rejects_too_few_iterations_with_clear_error() {
        let phc = hash_password_with_iterations("pw", MIN_ITERATIONS).unwrap();
        let weak = phc.replace("i=100000", "i=1000");
        let err = weak.parse::<StoredHash>().unwrap_err();
        assert!(
            matches!(
                err,
                PasswordError::TooFewIterations {
                    found: 1000,
                    min: MIN_ITERATIONS
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("at least 100000"), "{err}");
    }

    #[test]
    fn parse_rejects_too_many_iterations() {
        let phc = hash_password_with_iterations("pw", MIN_ITERATIONS).unwrap();
        let costly = phc.replace("i=100000", "i=4000000000");
        assert!(matches!(
            costly.parse::<StoredHash>(),
            Err(PasswordError::TooManyIterations { .. })
        ));
    }

    #[test]
    fn parse_rejects_pbkdf2_hash_without_iteration_count() {
        let phc = hash_password_with_iterations("pw", MIN_ITERATIONS).unwrap();
        let bare = phc.replace("i=100000,", "");
        assert!(matches!(
            bare.parse::<StoredHash>(),
            Err(PasswordError::MissingParameter { name: "i", .. })
        ));
    }

    #[test]
    fn parse_rejects_pbkdf2_length_that_does_not_match_hash() {
        let phc = hash_password_with_iterations("pw", MIN_ITERATIONS).unwrap();
        let wrong = phc.replace("l=32", "l=64");
        assert!(matches!(
            wrong.parse::<StoredHash>(),
            Err(PasswordError::Malformed { .. })
        ));
    }

    #[test]
    fn parse_rejects_garbage_with_clear_error() {
        for garbage in [
            "",
            "   ",
            "$",
            "$$$$",
            "$pbkdf2-sha256$",
            "sha1:",
            "argon2:",
            "argon2:xyz",
        ] {
            let err = garbage.parse::<StoredHash>().unwrap_err();
            assert!(!err.to_string().is_empty(), "{garbage:?}");
        }
        assert!(matches!(
            "sha1:nosecondcolon".parse::<StoredHash>(),
            Err(PasswordError::MalformedSha1 { .. })
        ));
        assert!(matches!(
            "sha1:abc:not-hex".parse::<StoredHash>(),
            Err(PasswordError::MalformedSha1 { .. })
        ));
        assert!(matches!(
            "sha1:abc:a68df677".parse::<StoredHash>(),
            Err(PasswordError::MalformedSha1 { .. })
        ));
        assert!(matches!(
            "sha1:sälz:a68df677475c2b47b6e86d0467eec97ac5f4b85a".parse::<StoredHash>(),
            Err(PasswordError::MalformedSha1 { .. })
        ));
    }

    #[test]
    fn parse_ignores_surrounding_whitespace() {
        let line = format!("  {JUPYTER_DOCSTRING_SHA1}\n");
        assert!(line.parse::<StoredHash>().unwrap().verify("mypassword"));
    }

    #[test]
    fn parse_rejects_argon2_cost_above_limit() {
        let costly = JUPYTER_ARGON2_VECTOR.replace("m=10240", "m=4194304");
        assert!(matches!(
            costly.parse::<StoredHash>(),
            Err(PasswordError::Argon2CostTooHigh { .. })
        ));
    }

    #[test]
    fn parse_rejects_argon2_without_version_or_with_keyid() {
        let unversioned = JUPYTER_ARGON2_VECTOR.replace("$v=19", "");
        assert!(matches!(
            unversioned.parse::<StoredHash>(),
            Err(PasswordError::MissingParameter { name: "v", .. })
        ));
        let keyed = JUPYTER_ARGON2_VECTOR.replace("p=8", "p=8,keyid=AAAA");
        assert!(matches!(
            keyed.parse::<StoredHash>(),
            Err(PasswordError::UnsupportedParameter { .. })
        ));
    }

    #[test]
    fn debug_redacts_salt_and_hash() {
        let phc = hash_password_with_iterations("pw", MIN_ITERATIONS).unwrap();
        let mut parts = phc.rsplit('$');
        let hash_b64 = parts.next().unwrap();
        let salt_b64 = parts.next().unwrap();
        let stored: StoredHash = phc.parse().unwrap();
        let shown = format!("{stored:?} {stored:#?}");
        assert!(shown.contains("100000"), "{shown}");
        assert!(
            !shown.contains(hash_b64) && !shown.contains(salt_b64),
            "{shown}"
        );

        for vector in [JUPYTER_SHA1_VECTOR, JUPYTER_ARGON2_VECTOR] {
            let stored: StoredHash = vector.parse().unwrap();
            let shown = format!("{stored:?}");
            let secret_tail = vector.rsplit(['$', ':']).next().unwrap();
            assert!(!shown.contains(secret_tail), "{shown}");
        }
    }

    #[test]
    fn legacy_detection_flags_forms_from_other_tools() {
        assert!(!fast_hash("pw").is_legacy());
        assert!(JUPYTER_SHA1_VECTOR
            .parse::<StoredHash>()
            .unwrap()
            .is_legacy());
        assert!(JUPYTER_ARGON2_VECTOR
            .parse::<StoredHash>()
            .unwrap()
            .is_legacy());
    }

    #[test]
    fn verify_checks_jupyter_sha1_vector() {
        let stored: StoredHash = JUPYTER_SHA1_VECTOR.parse().unwrap();
        assert!(stored.verify(VECTOR_PASSWORD));
        assert!(!stored.verify("jupyter-vector-px"));
        let docstring: StoredHash = JUPYTER_DOCSTRING_SHA1.parse().unwrap();
        assert!(docstring.verify("mypassword"));
        assert!(!docstring.verify("otherpassword"));
    }

    #[test]
    fn verify_checks_jupyter_argon2_vector() {
        let stored: StoredHash = JUPYTER_ARGON2_VECTOR.parse().unwrap();
        assert!(matches!(stored, StoredHash::JupyterArgon2(_)));
        assert!(stored.verify(VECTOR_PASSWORD));
        assert!(!stored.verify("jupyter-vector-px"));
    }

    #[test]
    fn verify_checks_htpasswd_bcrypt_vector() {
        let stored: StoredHash = HTPASSWD_BCRYPT_VECTOR.parse().unwrap();
        assert!(matches!(
            stored,
            StoredHash::Bcrypt(BcryptHash { cost: 5, .. })
        ));
        assert!(stored.verify(HTPASSWD_VECTOR_PASSWORD));
        assert!(!stored.verify("htpasswd-vector-px"));
        assert!(!stored.verify(""));
        assert!(stored.is_legacy(), "a hint to re-hash is logged");
    }

    #[test]
    fn verify_accepts_2a_and_2b_spellings_of_the_same_bcrypt_hash() {
        // $2a$, $2b$ and $2y$ differ only in bugs of old C implementations that never touched
        // passwords under 256 bytes; the derived bytes are the same.
        for prefix in ["$2a$", "$2b$"] {
            let respelled = HTPASSWD_BCRYPT_VECTOR.replacen("$2y$", prefix, 1);
            let stored: StoredHash = respelled.parse().unwrap();
            assert!(stored.verify(HTPASSWD_VECTOR_PASSWORD), "{prefix}");
        }
    }

    #[test]
    fn parse_refuses_bcrypt_costs_outside_the_bounds_naming_the_limits() {
        let cheap = HTPASSWD_BCRYPT_VECTOR.replacen("$05$", "$04$", 1);
        let err = cheap.parse::<StoredHash>().unwrap_err();
        assert!(
            matches!(
                err,
                PasswordError::BcryptCostOutOfRange {
                    found: 4,
                    min: 5,
                    max: 17
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("nbgate hash-password"), "{err}");
        let costly = HTPASSWD_BCRYPT_VECTOR.replacen("$05$", "$31$", 1);
        assert!(matches!(
            costly.parse::<StoredHash>(),
            Err(PasswordError::BcryptCostOutOfRange { found: 31, .. })
        ));
    }

    #[test]
    fn parse_refuses_malformed_and_2x_bcrypt_without_echoing_it() {
        let short = &HTPASSWD_BCRYPT_VECTOR[..59];
        assert!(matches!(
            short.parse::<StoredHash>(),
            Err(PasswordError::MalformedBcrypt { .. })
        ));
        let bad_b64 = HTPASSWD_BCRYPT_VECTOR.replacen("N4iJx", "N4i!x", 1);
        let err = bad_b64.parse::<StoredHash>().unwrap_err();
        assert!(
            matches!(err, PasswordError::MalformedBcrypt { .. }),
            "{err:?}"
        );
        assert!(!err.to_string().contains("N4i"), "{err}");
        let buggy = HTPASSWD_BCRYPT_VECTOR.replacen("$2y$", "$2x$", 1);
        assert!(matches!(
            buggy.parse::<StoredHash>(),
            Err(PasswordError::UnsupportedAlgorithm { found: "2x" })
        ));
    }

    #[test]
    fn weak_htpasswd_formats_are_refused_saying_why_and_how_to_rehash() {
        for (vector, scheme) in [
            (HTPASSWD_APR1_VECTOR, "apr1-md5"),
            (HTPASSWD_SHA_VECTOR, "{SHA}"),
            (HTPASSWD_CRYPT_VECTOR, "crypt (DES)"),
            ("$1$saltsalt$2vnaRpHa6Jxjz5n83ok8Z0", "md5-crypt"),
        ] {
            let err = vector.parse::<StoredHash>().unwrap_err();
            assert!(
                matches!(err, PasswordError::WeakHtpasswdHash { scheme: s, .. } if s == scheme),
                "{vector}: {err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains(scheme) && msg.contains("weak"), "{msg}");
            assert!(
                msg.contains("nbgate hash-password") && msg.contains("htpasswd -B"),
                "{msg}"
            );
            let secret_tail = vector.rsplit(['$', '}']).next().unwrap();
            assert!(!msg.contains(secret_tail), "the hash is not echoed: {msg}");
        }
    }

    #[test]
    fn debug_of_a_bcrypt_hash_shows_only_its_cost() {
        let stored: StoredHash = HTPASSWD_BCRYPT_VECTOR.parse().unwrap();
        let shown = format!("{stored:?} {stored:#?}");
        assert!(shown.contains("Bcrypt") && shown.contains('5'), "{shown}");
        assert!(!shown.contains("N4iJx"), "{shown}");
    }

    #[test]
    fn check_new_password_refuses_empty_and_short() {
        assert!(matches!(
            check_new_password(""),
            Err(PasswordError::EmptyPassword)
        ));
        let err = check_new_password("1234567").unwrap_err();
        assert!(matches!(err, PasswordError::PasswordTooShort { min: 8 }));
        assert!(err.to_string().contains("at least 8 characters"), "{err}");
        assert!(!err.to_string().contains("1234567"));
        assert!(check_new_password("12345678").is_ok());
    }

    #[test]
    fn check_new_password_counts_characters_not_bytes() {
        // 7 characters, 14 bytes.
        assert!(check_new_password("äöüäöüä").is_err());
        assert!(check_new_password("äöüäöüäö").is_ok());
    }

    #[test]
    fn dummy_hash_is_computed_once_with_default_cost() {
        let dummy = dummy_hash();
        assert!(std::ptr::eq(dummy, dummy_hash()), "computed once");
        assert!(
            matches!(dummy, StoredHash::Pbkdf2(h) if h.iterations == DEFAULT_ITERATIONS),
            "{dummy:?}"
        );
    }

    #[test]
    fn generate_token_is_43_url_safe_chars_and_random() {
        let a = generate_token();
        let b = generate_token();
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a, b);
    }

    #[test]
    fn generate_password_uses_unambiguous_alphabet_and_passes_policy() {
        let a = generate_password();
        assert_eq!(a.chars().count(), GENERATED_PASSWORD_LEN);
        assert!(a.bytes().all(|c| UNAMBIGUOUS_ALPHABET.contains(&c)));
        assert!(!a.contains(['0', 'O', 'o', '1', 'I', 'l', 'i']));
        check_new_password(&a).unwrap();
        assert_ne!(a, generate_password());
    }
}
