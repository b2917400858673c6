//! Names that must be valid, checked once where they enter (clap parses
//! them directly) and carried as their own types after that: model names
//! and versions (shared with the model server) and toolchain names; and
//! the ids of new runs.

pub use legion_serve::names::{check_label, InvalidName, ModelName, ModelVersion};

legion_serve::checked_name!(
    /// A registered toolchain's name: lowercase letters, digits, `.`, `_`,
    /// `-`, starting with a letter or digit; at most 63 (a Kubernetes label
    /// value).
    ToolchainName,
    |v| check_label("toolchain name", v, 63)
);

/// A new training's id: the start of its model's name, then
/// [`new_run_id`]'s suffix.
pub fn training_id(model: &str) -> String {
    new_run_id(model_prefix(model))
}

/// A new packaging's id: `MODEL-pkg-…`.
pub fn packaging_id(model: &str) -> String {
    new_run_id(&format!("{}-pkg", model_prefix(model)))
}

/// A new batch job's id: `batch-MODEL-…`.
pub fn batch_id(model: &str) -> String {
    new_run_id(&format!("batch-{}", model_prefix(model)))
}

/// The start of `model` that begins its runs' ids: its first
/// [`RUN_PREFIX_CHARS`] characters.
pub fn model_prefix(model: &str) -> &str {
    match model.char_indices().nth(RUN_PREFIX_CHARS) {
        Some((end, _)) => &model[..end],
        None => model,
    }
}

/// A new run's id: `prefix`, a dash, and 16 characters that sort in the
/// order the ids were made — the milliseconds since 1970 (45 bits), then
/// 35 random bits, in lowercase Crockford base 32. Within a process each
/// id sorts after the one made before it, even when the clock steps back.
///
/// Made in order, a new run's id lands at the end of the runs' id index:
/// a group of creates written together changes one page of it, where
/// random ids changed one page a run (each a 4 KiB WAL frame on SQLite).
/// And ids never repeat within a process (with the 32 random bits
/// before, the first repeat among one model's runs was expected near
/// 82,000 runs — the birthday bound — failing that create); 35 random
/// bits a millisecond keep replicas apart.
pub fn new_run_id(prefix: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let suffix = {
        let mut last = LAST_RUN_ID.lock().unwrap_or_else(|e| e.into_inner());
        next_run_suffix(now, rand::random::<u64>(), &mut last)
    };
    let mut id = String::with_capacity(prefix.len() + 1 + RUN_SUFFIX_CHARS);
    id.push_str(prefix);
    id.push('-');
    for i in (0..RUN_SUFFIX_CHARS).rev() {
        id.push(CROCKFORD[((suffix >> (5 * i)) & 31) as usize] as char);
    }
    id
}

/// How many characters [`new_run_id`] adds after the prefix and its dash.
pub const RUN_SUFFIX_CHARS: usize = 16;

/// How much of a model's name starts its runs' ids: so that a Kubernetes
/// Job's name, `legion-` and the id (`-pkg` added for a packaging), fits
/// a 63-character DNS label whole: 7 + 32 + 4 + 1 + 16 = 60.
/// (`exec::kube::job`'s tests check it.)
pub const RUN_PREFIX_CHARS: usize = 32;

const RUN_RANDOM_BITS: u32 = 35;
/// Crockford's base 32, lowercase: no i, l, o, u; in ASCII order.
const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
static LAST_RUN_ID: std::sync::Mutex<u128> = std::sync::Mutex::new(0);

/// The next suffix after `last`: the clock's, or one past `last` if the
/// clock's is not greater (many ids in one millisecond, a clock set back).
fn next_run_suffix(now_ms: u64, random: u64, last: &mut u128) -> u128 {
    let bits = 5 * RUN_SUFFIX_CHARS as u32;
    let from_clock =
        (u128::from(now_ms) << RUN_RANDOM_BITS) | u128::from(random & ((1 << RUN_RANDOM_BITS) - 1));
    let next = from_clock.max(*last + 1) & ((1 << bits) - 1);
    *last = next;
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toolchain_names_are_checked() {
        assert_eq!(
            "mlflow".parse::<ToolchainName>().unwrap().as_str(),
            "mlflow"
        );
        let e = "Bad Name".parse::<ToolchainName>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "'Bad Name' is not a valid toolchain name: use 1-63 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
        );
        assert!(ToolchainName::new("a".repeat(64)).is_err());
    }

    #[test]
    fn run_ids_sort_in_the_order_they_were_made() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let ids: Vec<String> = (0..10_000).map(|_| new_run_id("wine")).collect();
        let after = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        for id in [&ids[0], &ids[9_999]] {
            let suffix = id.strip_prefix("wine-").unwrap();
            assert_eq!(suffix.len(), RUN_SUFFIX_CHARS, "{id}");
            let value = suffix.bytes().fold(0u128, |v, b| {
                let digit = CROCKFORD
                    .iter()
                    .position(|&c| c == b)
                    .expect("a base-32 digit");
                v << 5 | digit as u128
            });
            // Its clock part is the time it was made (or just past it,
            // when ids were made faster than one a millisecond).
            let ms = value >> RUN_RANDOM_BITS;
            assert!(
                ms >= before && ms <= after + 10_000,
                "{id}: {ms} not in {before}..{after}"
            );
        }
    }

    #[test]
    fn run_ids_start_with_their_kind_and_the_start_of_the_model_name() {
        assert_eq!(model_prefix("wine"), "wine");
        assert_eq!(model_prefix(&"m".repeat(63)), "m".repeat(RUN_PREFIX_CHARS));
        assert!(training_id("wine").starts_with("wine-"));
        assert!(packaging_id("wine").starts_with("wine-pkg-"));
        assert!(batch_id("wine").starts_with("batch-wine-"));
    }

    #[test]
    fn run_suffixes_follow_the_clock_and_never_step_back() {
        let mut last = 0;
        let a = next_run_suffix(1_000, u64::MAX, &mut last);
        // Only 35 random bits are kept, under the milliseconds.
        assert_eq!(a, (1_000 << RUN_RANDOM_BITS) | ((1 << RUN_RANDOM_BITS) - 1));
        // The same millisecond, or a clock set back: one past the last.
        assert_eq!(next_run_suffix(1_000, 0, &mut last), a + 1);
        assert_eq!(next_run_suffix(10, 7, &mut last), a + 2);
        // A later millisecond: the clock's again.
        assert_eq!(
            next_run_suffix(5_000, 3, &mut last),
            (5_000 << RUN_RANDOM_BITS) | 3
        );
    }
}
