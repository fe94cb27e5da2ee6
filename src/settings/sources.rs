//! What each settings source may say: keys that name no setting are refused (naming the
//! closest known one), and load errors name the file, key and position without ever quoting a
//! value or a source line.

use super::*;

/// Every setting's dotted name, from the embedded defaults, which list each one.
fn known_keys() -> Vec<String> {
    let defaults: toml::Table = DEFAULTS.parse().unwrap_or_default();
    let mut keys = Vec::new();
    collect_keys("", &defaults, &mut keys);
    keys
}

/// The dotted names of `table`'s values (arrays are values, tables are sections).
fn collect_keys(prefix: &str, table: &toml::Table, keys: &mut Vec<String>) {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            toml::Value::Table(section) => collect_keys(&key, section, keys),
            _ => keys.push(key),
        }
    }
}

/// "unknown setting X in WHERE (did you mean Y?)": a misspelt key is silently ignored by the
/// layers, so the operator would believe a setting is in force that is not.
fn unknown_key(key: &str, place: &str, known: &[String]) -> SettingsError {
    let closest = known
        .iter()
        .map(|candidate| (strsim::damerau_levenshtein(key, candidate), candidate))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| format!("; the closest known setting is {candidate}"))
        .unwrap_or_default();
    SettingsError::Load(format!("unknown setting {key} in {place}{closest}"))
}

/// Keys of the settings file that no setting has. A file that does not parse is left to the
/// layered load, whose error says where without quoting it.
pub(super) fn check_file_keys(file: &Path) -> Result<(), SettingsError> {
    let Ok(table) = std::fs::read_to_string(file)
        .unwrap_or_default()
        .parse::<toml::Table>()
    else {
        return Ok(());
    };
    let known = known_keys();
    let mut keys = Vec::new();
    collect_keys("", &table, &mut keys);
    match keys.into_iter().find(|key| !known.contains(key)) {
        Some(key) => Err(unknown_key(
            &key,
            &format!("settings file {}", file.display()),
            &known,
        )),
        None => Ok(()),
    }
}

/// `PARTNER_SYNC__…` variables that name no setting.
pub(super) fn check_environment_keys(
    env: &std::collections::HashMap<String, String>,
) -> Result<(), SettingsError> {
    let known = known_keys();
    let prefix = format!("{ENV_PREFIX}__");
    let mut names: Vec<&String> = env
        .keys()
        .filter(|name| name.starts_with(&prefix))
        .collect();
    names.sort();
    for name in names {
        let key = name[prefix.len()..].to_lowercase().replace("__", ".");
        if !known.contains(&key) {
            return Err(unknown_key(
                &key,
                &format!("the environment variable {name}"),
                &known,
            ));
        }
    }
    Ok(())
}

/// A `config` error as one line that names the file, the key and the position, but never
/// quotes a value or a source line: the `toml` crate's syntax errors print the offending line,
/// and type errors print the value, and either may be a password.
pub(super) fn describe_load_error(
    error: &config::ConfigError,
    file: Option<&Path>,
) -> SettingsError {
    SettingsError::Load(describe_config_error(error, file))
}

fn describe_config_error(error: &config::ConfigError, file: Option<&Path>) -> String {
    use config::ConfigError as E;
    let origin = |origin: &Option<String>| {
        origin
            .as_deref()
            .map(|o| format!(" (from {o})"))
            .unwrap_or_default()
    };
    match error {
        E::FileParse { uri, cause } => {
            // The config crate names the file relative to the working directory; the path as
            // given (`--config`) is the one ops recognise. Only that file is parsed from disk:
            // the other layers are built in.
            let path = uri.as_ref().and(file);
            let name = path
                .map(|f| f.display().to_string())
                .or_else(|| uri.clone())
                .unwrap_or_else(|| "built-in defaults".to_owned());
            let position = cause
                .downcast_ref::<toml::de::Error>()
                .and_then(toml::de::Error::span)
                .and_then(|span| {
                    // The span indexes the file the config crate read: read it again here,
                    // only to turn the offset into a line and column.
                    let text = std::fs::read_to_string(path?).ok()?;
                    Some(line_and_column(&text, span.start))
                });
            match position {
                Some((line, column)) => {
                    format!(
                        "settings file {name}: TOML syntax error at line {line} column {column}"
                    )
                }
                None => format!("settings file {name}: TOML syntax error"),
            }
        }
        E::Type {
            origin: from,
            unexpected,
            expected,
            key,
        } => {
            // `unexpected` reads `string "the value"`: keep only what kind of value it was.
            let kind = unexpected.to_string();
            let kind = kind.split(['"', '`']).next().unwrap_or_default().trim();
            format!(
                "invalid setting {}{}: expected {expected}, got a {kind}",
                key.as_deref().unwrap_or("(unknown key)"),
                origin(from),
            )
        }
        E::At {
            error,
            origin: from,
            key,
        } => match key {
            Some(key) => format!(
                "invalid setting {key}{}: {}",
                origin(from),
                describe_config_error(error, file)
            ),
            None => describe_config_error(error, file),
        },
        E::NotFound(key) => format!("missing setting {key}"),
        E::Message(text) => without_quoted_values(text),
        other => without_quoted_values(&other.to_string()),
    }
}

/// `(line, column)`, both from 1, of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// Serde's messages quote the value they refused (`invalid value: string "…", expected …`):
/// every quoted part is replaced by `…`, the rest of the sentence stays.
fn without_quoted_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match quote {
            Some(open) if c == open => quote = None,
            Some(_) => {}
            None if matches!(c, '"' | '`' | '\'') => {
                quote = Some(c);
                out.push('…');
            }
            None if c.is_control() => out.push(' '),
            None => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_are_dropped_from_messages() {
        assert_eq!(
            without_quoted_values("invalid value: string \"hunter2\", expected a duration"),
            "invalid value: string …, expected a duration"
        );
        assert_eq!(without_quoted_values("a `b` c 'd'\ne"), "a … c … e");
    }

    #[test]
    fn positions_count_lines_and_characters_from_one() {
        let text = "[a]\nb = 1\nsecret = \"é x\n";
        assert_eq!(line_and_column(text, 0), (1, 1));
        assert_eq!(line_and_column(text, 4), (2, 1));
        assert_eq!(line_and_column(text, text.find('x').unwrap()), (3, 13));
    }
}
