//! The label sanitiser and checkers: `LabelValue::sanitize` turns any text into a value that
//! `LabelValue::new` accepts (at most 63 characters), and is idempotent; `LabelKey::parse`
//! never panics and a parsed key prints back as its input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetopo::labels::syntax::{LabelKey, LabelValue};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Some(v) = LabelValue::sanitize(&s) {
        let text = v.as_str();
        assert!(!text.is_empty() && text.len() <= 63, "{text:?}");
        assert_eq!(LabelValue::new(text).as_ref(), Ok(&v));
        assert_eq!(LabelValue::sanitize(text).as_ref(), Some(&v));
    }
    if let Ok(k) = LabelKey::parse(&s) {
        assert_eq!(k.to_string(), s);
    }
});
