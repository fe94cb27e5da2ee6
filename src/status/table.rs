//! Aligned text tables with optional colour. Colour is for people at a terminal only: piped
//! output (scripts, logs, `watch`) stays plain text, and `NO_COLOR` turns it off everywhere.
//!
//! Cells hold text that is already printable (see [`super::printable`]); widths count
//! characters, and the escape codes of a coloured cell wrap its padding, so columns line up
//! with colour on or off.

use std::ffi::OsStr;

use anstyle::{AnsiColor, Style};

/// Whether to colour output: only on a terminal, and never when `NO_COLOR` is set to anything
/// but the empty string (<https://no-color.org>).
pub fn colour_wanted(stdout_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stdout_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// What a cell says about health, and so its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    /// Succeeded, fresh, active.
    Good,
    /// Needs attention soon: a partial success.
    Warn,
    /// Failed, stale, expired, needs a person.
    Bad,
}

impl Tone {
    fn style(self) -> Style {
        match self {
            Tone::Plain => Style::new(),
            Tone::Good => AnsiColor::Green.on_default(),
            Tone::Warn => AnsiColor::Yellow.on_default(),
            Tone::Bad => AnsiColor::Red.on_default().bold(),
        }
    }
}

pub struct Cell {
    pub text: String,
    pub tone: Tone,
}

impl Cell {
    pub fn new(text: impl Into<String>, tone: Tone) -> Self {
        Self {
            text: text.into(),
            tone,
        }
    }

    pub fn plain(text: impl Into<String>) -> Self {
        Self::new(text, Tone::Plain)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    /// Numbers.
    Right,
}

pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Self {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are empty, extra ones are dropped.
    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    /// The table, each line indented by `indent` spaces; columns two spaces apart, and no
    /// trailing spaces.
    pub fn render(&self, indent: usize, colour: bool) -> String {
        let width = |cell: &str| cell.chars().count();
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (header, _))| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(i))
                    .map(|cell| width(&cell.text))
                    .chain([width(header)])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let header: Vec<Cell> = self.columns.iter().map(|(h, _)| Cell::plain(*h)).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = " ".repeat(indent);
            for (i, ((_, align), column_width)) in self.columns.iter().zip(&widths).enumerate() {
                let cell = row.get(i);
                let text = cell.map_or("", |c| c.text.as_str());
                let pad = " ".repeat(column_width - width(text));
                let padded = match align {
                    Align::Left => format!("{text}{pad}"),
                    Align::Right => format!("{pad}{text}"),
                };
                if i > 0 {
                    line.push_str("  ");
                }
                match cell.map(|c| c.tone) {
                    Some(tone) if colour && tone != Tone::Plain => {
                        let style = tone.style();
                        line.push_str(&format!("{style}{padded}{style:#}"));
                    }
                    _ => line.push_str(&padded),
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_wanted(true, None));
        assert!(!colour_wanted(false, None));
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        assert!(!colour_wanted(false, Some(OsStr::new("1"))));
        // An empty NO_COLOR is as good as none.
        assert!(colour_wanted(true, Some(OsStr::new(""))));
    }

    fn sample() -> Table {
        let mut table = Table::new(&[("JOB", Align::Left), ("ROWS", Align::Right)]);
        table.row(vec![
            Cell::new("rabot_mirror", Tone::Bad),
            Cell::plain("1,024"),
        ]);
        table.row(vec![Cell::new("ez", Tone::Good), Cell::plain("3")]);
        table
    }

    #[test]
    fn plain_tables_align_without_escape_codes() {
        assert_eq!(
            sample().render(2, false),
            "  JOB            ROWS\n  rabot_mirror  1,024\n  ez                3\n"
        );
    }

    #[test]
    fn coloured_cells_wrap_their_padding_so_columns_still_line_up() {
        let coloured = sample().render(0, true);
        let lines: Vec<&str> = coloured.lines().collect();
        assert_eq!(lines[0], "JOB            ROWS");
        assert_eq!(lines[1], "\u{1b}[1m\u{1b}[31mrabot_mirror\u{1b}[0m  1,024");
        assert_eq!(lines[2], "\u{1b}[32mez          \u{1b}[0m      3");
    }
}
