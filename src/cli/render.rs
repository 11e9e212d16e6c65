//! Output of `kubectl pki`: every command's result is one serde-serializable value, printed as
//! JSON or YAML as is, or as the command's own text (`table`). Tables are plain aligned
//! columns, like kubectl's, so they read in a terminal and cut with `awk`.

use serde::Serialize;

/// `-o`: how results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable text and aligned columns.
    #[default]
    Table,
    /// The result as JSON.
    Json,
    /// The result as YAML.
    Yaml,
}

/// A command's result: serializable for `-o json|yaml`, with its own text for `-o table`.
pub trait Report: Serialize {
    /// The text `-o table` prints.
    fn table(&self) -> String;
}

/// Why a result could not be printed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// JSON serialization failed.
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// YAML serialization failed.
    #[error("cannot write YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

/// `report` in `format`, ending with a newline.
pub fn render<R: Report>(report: &R, format: Format) -> Result<String, RenderError> {
    let mut text = match format {
        Format::Table => report.table(),
        Format::Json => serde_json::to_string_pretty(report)?,
        Format::Yaml => serde_yaml::to_string(report)?,
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// Columns aligned to their widest cell, two spaces apart, headers in upper case.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = String>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(&mut headers.iter().map(|h| h.to_uppercase()));
    for row in rows {
        out += &line(&mut row.iter().cloned());
    }
    out
}

/// `value`, or `-` when there is none (kubectl's placeholder for an empty cell).
pub fn or_dash(value: Option<&str>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or("-").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Example {
        days_left: i64,
    }

    impl Report for Example {
        fn table(&self) -> String {
            table(&["days left"], &[vec![self.days_left.to_string()]])
        }
    }

    #[test]
    fn tables_align_columns() {
        let text = table(
            &["name", "ready"],
            &[
                vec!["a".to_owned(), "True".to_owned()],
                vec!["longer-name".to_owned(), "False".to_owned()],
            ],
        );
        assert_eq!(
            text,
            "NAME         READY\na            True\nlonger-name  False\n"
        );
    }

    #[test]
    fn every_format_renders() {
        let report = Example { days_left: 3 };
        assert_eq!(render(&report, Format::Table).expect("table"), "DAYS LEFT\n3\n");
        assert_eq!(
            render(&report, Format::Json).expect("json"),
            "{\n  \"daysLeft\": 3\n}\n"
        );
        assert_eq!(render(&report, Format::Yaml).expect("yaml"), "daysLeft: 3\n");
    }

    #[test]
    fn empty_cells_show_a_dash() {
        assert_eq!(or_dash(None), "-");
        assert_eq!(or_dash(Some("")), "-");
        assert_eq!(or_dash(Some("x")), "x");
    }
}
