//! Test-only helpers shared by unit tests of several modules.

/// `count` pseudo-random strings over `alphabet` (xorshift, fixed `seed`:
/// the same strings every run), each shorter than `max_len`.
pub fn random_strings(alphabet: &str, mut seed: u64, max_len: u64, count: usize) -> Vec<String> {
    let alphabet: Vec<char> = alphabet.chars().collect();
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..count)
        .map(|_| {
            let len = next() % max_len;
            (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect()
        })
        .collect()
}
