//! Deterministic data. Every partner draws its generated data from `Prng` streams keyed by the
//! seed and the record's position, so the same options give byte-identical JSON.

/// SplitMix64: tiny and fully specified, so a seed yields the same data on every platform and
/// with every version of the rand crate (whose StdRng promises neither).
pub(crate) struct Prng(u64);

impl Prng {
    pub(crate) fn new(seed: u64, stream: u64) -> Self {
        Self(mix(seed ^ mix(stream)))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform enough below `bound` (the modulo bias is irrelevant for test data).
    pub(crate) fn below(&mut self, bound: u32) -> u32 {
        if bound == 0 {
            0
        } else {
            (self.next_u64() % u64::from(bound)) as u32
        }
    }

    pub(crate) fn between(&mut self, low: u32, high: u32) -> u32 {
        low + self.below(high.saturating_sub(low).saturating_add(1))
    }

    pub(crate) fn percent(&mut self, chance: u32) -> bool {
        self.below(100) < chance
    }

    /// `items` are the constant tables below, never empty.
    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u32) as usize]
    }

    pub(crate) fn digits(&mut self, count: usize) -> String {
        (0..count)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// "YYYY-MM-DDThh:mm:ssZ" within the given years.
pub(crate) fn timestamp(rng: &mut Prng, first_year: u32, last_year: u32) -> String {
    let year = rng.between(first_year, last_year);
    let month = rng.between(1, 12);
    let day = rng.between(1, 28);
    let (hour, minute, second) = (rng.below(24), rng.below(60), rng.below(60));
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

pub(crate) fn date(year: u32, month: u32, day: u32) -> String {
    format!("{year:04}-{month:02}-{day:02}")
}

/// `(year, month)` with month 1..=12, moved `months` ahead.
pub(crate) fn add_months((year, month): (u32, u32), months: u32) -> (u32, u32) {
    let zero_based = year * 12 + (month - 1) + months;
    (zero_based / 12, zero_based % 12 + 1)
}

pub(crate) fn last_day_of((year, month): (u32, u32)) -> String {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    date(year, month, days)
}
