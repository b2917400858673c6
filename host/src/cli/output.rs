//! Printing results as tables or JSON.

use serde::Serialize;

use super::Format;

/// Prints `value` as pretty JSON.
pub fn json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        // Plain data always serialises; say so rather than print nothing.
        Err(e) => eprintln!("error: cannot print the result as JSON: {e}"),
    }
}

/// Prints rows under `header` as a table, or `value` as JSON.
pub fn table<T: Serialize + ?Sized>(
    format: Format,
    value: &T,
    header: &[&str],
    rows: Vec<Vec<String>>,
) {
    if format == Format::Json {
        return json(value);
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header(header.iter().map(|h| h.to_uppercase()));
    for r in rows {
        t.add_row(r);
    }
    println!("{t}");
}

/// Prints `key: value` lines, or `value` as JSON.
pub fn fields<T: Serialize + ?Sized>(format: Format, value: &T, pairs: Vec<(&str, String)>) {
    if format == Format::Json {
        return json(value);
    }
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        println!("{:width$}  {v}", format!("{k}:"), width = width + 1);
    }
}
