//! A list for a log line, cut short: the first [`SHOWN`] entries and how many more, formatted
//! only when the line is written.

use std::fmt;

/// How many entries a log line lists; the rest are counted.
pub const SHOWN: usize = 16;

/// `entries` as `[a, b, …] and N more`: each entry by its `Debug` (`?Abridged(…)` in a tracing
/// field) or by its `Display` (`%Abridged(…)`). At the first sync the device gets a peer and the
/// table three routes per node: 5,000 peers listed whole made a log line of about 1 MB, and the
/// routes another, built in memory (heaptrack), and past what log pipelines keep (CloudWatch Logs
/// takes events of at most 256 KB).
pub struct Abridged<'a, T>(pub &'a [T]);

impl<T> Abridged<'_, T> {
    fn write(
        &self,
        f: &mut fmt::Formatter<'_>,
        entry: impl Fn(&T, &mut fmt::Formatter<'_>) -> fmt::Result,
    ) -> fmt::Result {
        let shown = &self.0[..self.0.len().min(SHOWN)];
        f.write_str("[")?;
        for (i, e) in shown.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            entry(e, f)?;
        }
        f.write_str("]")?;
        match self.0.len() - shown.len() {
            0 => Ok(()),
            more => write!(f, " and {more} more"),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Abridged<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, T::fmt)
    }
}

impl<T: fmt::Display> fmt::Display for Abridged<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, T::fmt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abridged_table() {
        let many: Vec<u32> = (0..40).collect();
        let cases: [(&str, &[u32], &str); 4] = [
            ("none", &[], "[]"),
            ("a few", &[1, 2, 3], "[1, 2, 3]"),
            ("exactly the limit", &many[..SHOWN], "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]"),
            ("over it", &many, "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15] and 24 more"),
        ];
        for (what, entries, want) in cases {
            assert_eq!(format!("{:?}", Abridged(entries)), want, "{what}");
            assert_eq!(format!("{}", Abridged(entries)), want, "{what}");
        }
        let words = ["a b", "c"];
        assert_eq!(format!("{:?} · {}", Abridged(&words), Abridged(&words)), r#"["a b", "c"] · [a b, c]"#);
    }
}
