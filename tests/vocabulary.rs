//! The label vocabulary has one home: `src/labels/keys.rs` (and the compatibility keys in
//! `src/labels/compat.rs`). Outside tests, no other source file spells the prefix or a key.
//! The value vocabulary too: the names of fabric states, link layers, sources and NIC roles are
//! spelled only by their enums in `src/model/`; everything else asks the enum.

use std::{fs, path::Path};

/// The non-test part of a Rust source file: everything before its `#[cfg(test)]` module.
fn code_of(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |i| &text[..i])
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// Key names as written in `keys.rs` (`#[strum(serialize = "gpu.count")]`), read from the file so
/// that a key added there is guarded too.
fn key_names(keys_rs: &str) -> Vec<String> {
    keys_rs
        .lines()
        .filter_map(|l| l.trim().strip_prefix("#[strum(serialize = \""))
        .filter_map(|l| l.split('"').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn no_label_key_literal_outside_the_vocabulary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let keys_rs = fs::read_to_string(root.join("src/labels/keys.rs")).unwrap();
    let names = key_names(&keys_rs);
    assert!(names.len() >= 19, "{names:?}");
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let home = [
        root.join("src/labels/keys.rs"),
        root.join("src/labels/compat.rs"),
    ];
    let mut found = Vec::new();
    for f in files.iter().filter(|f| !home.contains(f)) {
        let text = fs::read_to_string(f).unwrap();
        for (n, line) in code_of(&text).lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let quoted =
                |s: &str| code.contains(&format!("\"{s}\"")) || code.contains(&format!("/{s}\""));
            let hit = code.contains("\"nodetopo.io")
                || code.contains("accelerator.topograph.run/")
                || code.contains("nvidia.com/gpu.clique")
                || names.iter().any(|k| quoted(k));
            if hit {
                found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "label keys spelled outside src/labels/keys.rs:\n{}",
        found.join("\n")
    );
}

/// The quoted names of the model's value enums, except words too plain to be told from other
/// uses (`unknown`, `none`, `error`, and `fabric`, which is also a proximity level).
fn value_names() -> Vec<String> {
    use nodetopo::model::{FabricState, LinkLayer, NicRole, Source};
    use strum::IntoEnumIterator;
    let mut names: Vec<String> = FabricState::iter()
        .map(|v| v.as_str().to_string())
        .collect();
    names.extend(LinkLayer::iter().map(|v| <&str>::from(v).to_string()));
    names.extend(Source::iter().map(|v| v.to_string()));
    names.extend(NicRole::iter().map(|v| v.as_str().to_string()));
    names.retain(|n| !matches!(n.as_str(), "unknown" | "none" | "error" | "fabric"));
    names
}

#[test]
fn no_value_name_literal_outside_its_enum() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let names = value_names();
    assert!(names.len() >= 15, "{names:?}");
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let home = root.join("src/model");
    let mut found = Vec::new();
    for f in files.iter().filter(|f| !f.starts_with(&home)) {
        let text = fs::read_to_string(f).unwrap();
        for (n, line) in code_of(&text).lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            // Cargo feature names (`verbs`) are not values.
            let feature = code.trim_start().starts_with("#[cfg");
            if !feature && names.iter().any(|v| code.contains(&format!("\"{v}\""))) {
                found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "value names spelled outside their enums in src/model/:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_guard_sees_a_literal() {
    // The scan above would catch a key written out in code.
    let names = ["gpu.count".to_string()];
    let line = r#"let k = format!("{p}/gpu.count");"#;
    assert!(names.iter().any(|k| line.contains(&format!("/{k}\""))));
    assert_eq!(code_of("a\n#[cfg(test)]\nb"), "a\n");
    assert_eq!(key_names("    #[strum(serialize = \"x.y\")]\n"), ["x.y"]);
}
