//! Dependencies flow one way: every module of `src/` may use its own layer and the layers below
//! it, never one above (the layers are listed in ARCHITECTURE.md, and in [`LAYERS`] here). The
//! sandbox is a crate of its own (`crates/partner-sync-sandbox`, re-exported as `sandbox`):
//! only the top layer (the commands that start it) uses it.
//!
//! The check reads the source: every `crate::…` path (in `use` lines and in expressions, groups
//! such as `crate::{app, store}` included) and every `super::` path that climbs out of its
//! top-level module.
//!
//! Inside `src/partners/`, each partner's folder has an order of its own ([`PARTNER_PARTS`]:
//! wire → client → tables → flows → jobs), and no partner uses another's folder.

use std::path::{Path, PathBuf};

/// Top to bottom. A module may use modules of its own layer or of any layer below it.
const LAYERS: &[&[&str]] = &[
    &["cli", "demo"],
    &["app"],
    &["server", "status", "resync"],
    &["events", "freshness"],
    &["jobs"],
    &["partners", "finance"],
    &["job"],
    &["store"],
    &["http"],
    &["settings", "metrics", "cron", "crypto", "telemetry"],
];

/// Inside a partner's folder (`src/partners/<partner>/`), its parts, bottom to top: a part may
/// use its own rank and those below. Jobs use everything; nothing uses a job.
const PARTNER_PARTS: &[&[&str]] = &[
    &["wire", "cost_wire", "metrics_wire"],
    &["client"],
    &[
        "store",
        "link_store",
        "grant_store",
        "cost_store",
        "consumption_store",
    ],
    &["links", "grants"],
    &[
        "mirror_job",
        "customer_refresh_job",
        "rotation_job",
        "costs_job",
        "consumption_job",
    ],
];

/// Shared by every partner's wire types; belongs to no partner.
const PARTNER_SHARED: &[&str] = &["lenient"];

/// The sandbox crate's re-export, outside the layers; see the module comment.
const SANDBOX: &str = "sandbox";

/// Index in [`LAYERS`] (0 = top), `None` for a module no layer lists.
fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn is_module(name: &str) -> bool {
    name == SANDBOX || layer_of(name).is_some()
}

/// The top-level module a source file belongs to and how deep the file's module is
/// (`src/cron.rs` → `cron`, 1; `src/events/schedule.rs` → `events`, 2; `src/events/mod.rs`
/// → `events`, 1).
fn module_of(relative: &Path) -> (String, usize) {
    let parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let top = parts[0].trim_end_matches(".rs").to_owned();
    let mod_rs = parts.last().is_some_and(|last| last == "mod.rs");
    let depth = parts.len() - usize::from(mod_rs);
    (top, depth)
}

/// The source without its `//` comments (doc comments included), line by line.
fn code_lines(source: &str) -> impl Iterator<Item = (usize, &str)> {
    source.lines().enumerate().map(|(index, line)| {
        let code = line.find("//").map_or(line, |at| &line[..at]);
        (index + 1, code)
    })
}

fn identifier(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The top-level modules a path after `crate::` names, each with its offset in `after`: one,
/// or each item of a `{…}` group (which may span lines, hence the rest of the source).
fn named_modules(after: &str) -> Vec<(usize, String)> {
    let Some(group) = after.strip_prefix('{') else {
        return vec![(0, identifier(after).to_owned())];
    };
    let mut names = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    for (at, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if item_start && !c.is_whitespace() => {
                names.push((1 + at, identifier(&group[at..]).to_owned()));
                item_start = false;
            }
            _ => {}
        }
    }
    names
}

/// Every module of the crate `source` (a file of `module` at `depth`) names, with its line.
fn references(source: &str, depth: usize) -> Vec<(usize, String)> {
    let code: Vec<(usize, &str)> = code_lines(source).collect();
    let joined: String = code.iter().map(|(_, line)| format!("{line}\n")).collect();
    let line_at = |offset: usize| joined[..offset].matches('\n').count() + 1;
    let mut found = Vec::new();
    for (at, _) in joined.match_indices("crate::") {
        let preceded_by_ident = joined[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        if preceded_by_ident {
            continue; // `partner_sync::crate::` never happens; `$crate::` in macros does
        }
        let after = at + "crate::".len();
        for (offset, name) in named_modules(&joined[after..]) {
            found.push((line_at(after + offset), name));
        }
    }
    // `super::super::x` from `a::b` names the crate's `x`.
    for (at, _) in joined.match_indices("super::") {
        if joined[..at].ends_with("super::") {
            continue;
        }
        let mut rest = &joined[at..];
        let mut climbs = 0;
        while let Some(after) = rest.strip_prefix("super::") {
            climbs += 1;
            rest = after;
        }
        if climbs >= depth {
            let name = identifier(rest);
            if is_module(name) {
                found.push((line_at(at), name.to_owned()));
            }
        }
    }
    found
}

/// Why `module` may not name `used`, if it may not.
fn refusal(module: &str, used: &str) -> Option<String> {
    if used == module {
        return None;
    }
    if used == SANDBOX {
        return (layer_of(module) != Some(0))
            .then(|| format!("only {:?} may use the sandbox", LAYERS[0]));
    }
    let (Some(from), Some(to)) = (layer_of(module), layer_of(used)) else {
        return Some(format!("{used} is in no layer"));
    };
    (to < from).then(|| format!("{used} is in a higher layer than {module}"))
}

fn source_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("src is readable").path();
        if path.is_dir() {
            source_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// Every upward use in `source` (a file at `relative` below `src/`), as `file:line: reason`.
fn violations(relative: &Path, source: &str) -> Vec<String> {
    let (module, depth) = module_of(relative);
    references(source, depth)
        .into_iter()
        .filter_map(|(line, used)| {
            refusal(&module, &used).map(|why| {
                format!(
                    "src/{}:{line}: uses crate::{used} — {why}",
                    relative.display()
                )
            })
        })
        .collect()
}

#[test]
fn no_module_uses_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in &files {
        let relative = file.strip_prefix(&src).expect("below src");
        // The crate root and the binary only declare and call modules.
        if relative == Path::new("lib.rs") || relative == Path::new("main.rs") {
            continue;
        }
        let (module, _) = module_of(relative);
        if !is_module(&module) {
            problems.push(format!(
                "src/{}: module {module} is in no layer; add it to LAYERS and ARCHITECTURE.md",
                relative.display()
            ));
            continue;
        }
        let source = std::fs::read_to_string(file).expect("source is readable");
        problems.extend(violations(relative, &source));
        checked += 1;
    }
    assert!(checked > 40, "only {checked} source files found in {src:?}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn rank_of_part(part: &str) -> Option<usize> {
    PARTNER_PARTS.iter().position(|rank| rank.contains(&part))
}

/// The partner and part a file below `src/partners/` belongs to (`rabot/links.rs` → `rabot`,
/// `links`; `rabobank/grants/refresh.rs` → `rabobank`, `grants`), `None` for `mod.rs` files of
/// a partner and the shared files.
fn partner_part(relative: &Path) -> Option<(String, String)> {
    let parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    match parts.as_slice() {
        [partner, part, ..] if part != "mod.rs" => {
            Some((partner.clone(), part.trim_end_matches(".rs").to_owned()))
        }
        _ => None,
    }
}

/// Every `crate::partners::<partner>::<part>` and `super::<part>` in `source` (a file of
/// `partner`) that breaks the order of [`PARTNER_PARTS`] or reaches into another partner.
fn partner_violations(relative: &Path, source: &str) -> Vec<String> {
    let Some((partner, part)) = partner_part(relative) else {
        return Vec::new();
    };
    let code: String = code_lines(source)
        .map(|(_, line)| format!("{line}\n"))
        .collect();
    let line_at = |offset: usize| code[..offset].matches('\n').count() + 1;
    // Each use as (offset, partner, part); `None` for a use of the partner as a whole.
    let mut uses: Vec<(usize, String, Option<String>)> = Vec::new();
    for (at, _) in code.match_indices("crate::partners::") {
        let rest = &code[at + "crate::partners::".len()..];
        let used_partner = identifier(rest);
        if PARTNER_SHARED.contains(&used_partner) {
            continue;
        }
        match rest[used_partner.len()..].strip_prefix("::") {
            Some(after) if used_partner == partner => uses.extend(
                named_modules(after)
                    .into_iter()
                    .map(|(_, used_part)| (at, partner.clone(), Some(used_part))),
            ),
            _ => uses.push((at, used_partner.to_owned(), None)),
        }
    }
    // `super::x` from a file directly in the partner's folder names its sibling `x`.
    if relative.iter().count() == 2 {
        for (at, _) in code.match_indices("super::") {
            let used_part = identifier(&code[at + "super::".len()..]).to_owned();
            uses.push((at, partner.clone(), Some(used_part)));
        }
    }
    let mut found = Vec::new();
    for (at, used_partner, used_part) in uses {
        let (what, why) = match used_part {
            _ if used_partner != partner => (
                format!("partners::{used_partner}"),
                "another partner's folder".to_owned(),
            ),
            Some(used_part) if used_part != part => {
                let why = match (rank_of_part(&part), rank_of_part(&used_part)) {
                    (Some(from), Some(to)) if to > from => {
                        format!("{used_part} is above {part} in PARTNER_PARTS")
                    }
                    (None, Some(_)) => format!("{part} is in no rank of PARTNER_PARTS"),
                    _ => continue,
                };
                (format!("{partner}::{used_part}"), why)
            }
            _ => continue,
        };
        found.push(format!(
            "src/partners/{}:{}: uses {what} — {why}",
            relative.display(),
            line_at(at)
        ));
    }
    found
}

#[test]
fn each_partner_folder_keeps_its_parts_in_order() {
    let partners = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/partners");
    let mut files = Vec::new();
    source_files(&partners, &mut files);
    let mut problems = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&partners).expect("below src/partners");
        if let Some((_, part)) = partner_part(relative)
            && rank_of_part(&part).is_none()
            && !PARTNER_SHARED.contains(&part.as_str())
            && relative.iter().count() > 1
        {
            problems.push(format!(
                "src/partners/{}: part {part} is in no rank; add it to PARTNER_PARTS",
                relative.display()
            ));
        }
        let source = std::fs::read_to_string(file).expect("source is readable");
        problems.extend(partner_violations(relative, &source));
    }
    assert!(
        files.len() > 15,
        "only {} files in {partners:?}",
        files.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_partner_check_finds_uses_up_and_across() {
    let store = Path::new("rabot/store.rs");
    assert_eq!(
        partner_violations(
            store,
            "use crate::partners::rabot::wire::Customer;\n\
             use crate::partners::rabot::{Customer, mirror_job::RabotMirror};\n\
             use crate::partners::energyzero::store;\n\
             use super::links::RabotLinks;\n"
        ),
        [
            "src/partners/rabot/store.rs:2: uses rabot::mirror_job — mirror_job is above store in PARTNER_PARTS",
            "src/partners/rabot/store.rs:3: uses partners::energyzero — another partner's folder",
            "src/partners/rabot/store.rs:4: uses rabot::links — links is above store in PARTNER_PARTS",
        ]
    );
    assert!(
        partner_violations(
            Path::new("rabot/mirror_job.rs"),
            "use crate::partners::rabot::{Customer, store};\nuse super::store::Scope;\n"
        )
        .is_empty()
    );
}

#[test]
fn the_check_finds_upward_uses_in_every_form() {
    let settings = Path::new("settings/validation.rs");
    let found = violations(
        settings,
        "use crate::cron::parse_cron;\n\
         // use crate::app::Ignored;\n\
         use crate::{\n    cron,\n    events::schedule,\n};\n\
         fn f() { crate::jobs::is_enabled(); }\n",
    );
    assert_eq!(
        found,
        [
            "src/settings/validation.rs:5: uses crate::events — events is in a higher layer than settings",
            "src/settings/validation.rs:7: uses crate::jobs — jobs is in a higher layer than settings",
        ]
    );
    let climbing = violations(
        Path::new("store/runs.rs"),
        "use super::super::jobs::JobName;\nuse super::pool;\n",
    );
    assert_eq!(
        climbing,
        ["src/store/runs.rs:1: uses crate::jobs — jobs is in a higher layer than store"]
    );
    assert!(violations(Path::new("cli.rs"), "use crate::sandbox::Sandbox;\n").is_empty());
    assert_eq!(
        violations(Path::new("jobs/mod.rs"), "use crate::sandbox::Sandbox;\n").len(),
        1
    );
}
