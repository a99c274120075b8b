//! The plaintext-leak detector: captures on the underlay and reports pod traffic it can read.
