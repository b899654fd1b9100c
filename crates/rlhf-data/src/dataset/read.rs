//! Raw records from JSON-lines and Parquet files, as JSON objects, one at a time.
//!
//! Parquet rows go through the row API (no arrow) and become the same JSON shapes a JSONL file
//! would hold, so the column conventions are checked by one piece of code for both formats.

use crate::error::{DataError, Location, RecordIndex, Result};
use parquet::file::reader::SerializedFileReader;
use parquet::record::Field;
use serde_json::{Map, Number, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;

/// A record's columns, or why the record could not be read (e.g. a JSON syntax error).
pub type RawRecord = std::result::Result<Map<String, Value>, String>;

/// Calls `visit` for every record of `path` (`.jsonl`, `.json` as JSON lines, or `.parquet`).
pub fn for_each_record(path: &Path, mut visit: impl FnMut(Location, RawRecord) -> Result<()>) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "jsonl" | "json" => read_json_lines(path, &mut visit),
        "parquet" => read_parquet(path, &mut visit),
        _ => Err(DataError::file(path, "unknown dataset format (expected a .jsonl, .json or .parquet file)")),
    }
}

fn read_json_lines(path: &Path, visit: &mut impl FnMut(Location, RawRecord) -> Result<()>) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| DataError::file(path, format!("cannot open: {e}")))?;
    // Lines as bytes: a line that is not UTF-8 is one bad record, not the end of the file.
    for (i, bytes) in BufReader::new(file).split(b'\n').enumerate() {
        let bytes = bytes.map_err(|e| DataError::file(path, format!("cannot read line {}: {e}", i + 1)))?;
        let location = Location { path: path.to_path_buf(), index: RecordIndex::Line(i + 1) };
        let line = match std::str::from_utf8(&bytes) {
            Ok(line) => line,
            Err(e) => {
                let reason = format!("not valid UTF-8 (byte {} of the line)", e.valid_up_to() + 1);
                visit(location, Err(reason))?;
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let record = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(other) => Err(format!("expected a JSON object, found {}", json_type(&other))),
            Err(e) if i == 0 && line.trim_start().starts_with('[') => {
                Err(format!("not valid JSON lines ({e}); a JSON array file must be converted to one object per line"))
            }
            Err(e) => Err(format!("not valid JSON: {e}")),
        };
        visit(location, record)?;
    }
    Ok(())
}

/// The `parquet` crate panics on some malformed files (seen: an RLE run indexing past its
/// buffer); such a panic becomes an error naming the file and row.
fn unpanicked<T>(path: &Path, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(DataError::file(path, format!("{what}: malformed Parquet data (the reader gave up)"))))
}

fn read_parquet(path: &Path, visit: &mut impl FnMut(Location, RawRecord) -> Result<()>) -> Result<()> {
    let reader = unpanicked(path, "cannot read Parquet", || {
        SerializedFileReader::try_from(path).map_err(|e| DataError::file(path, format!("cannot read Parquet: {e}")))
    })?;
    let mut rows = reader.into_iter().enumerate();
    loop {
        let next = unpanicked(path, "cannot read Parquet", || Ok(rows.next()))?;
        let Some((row_index, row)) = next else { break };
        let row = row.map_err(|e| DataError::file(path, format!("row {row_index}: cannot read Parquet: {e}")))?;
        let map = row.get_column_iter().map(|(name, field)| (name.clone(), field_to_json(field))).collect();
        visit(Location { path: path.to_path_buf(), index: RecordIndex::Row(row_index) }, Ok(map))?;
    }
    Ok(())
}

fn field_to_json(field: &Field) -> Value {
    let float = |x: f64| Number::from_f64(x).map_or(Value::Null, Value::Number);
    match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(x) => (*x).into(),
        Field::Short(x) => (*x).into(),
        Field::Int(x) => (*x).into(),
        Field::Long(x) => (*x).into(),
        Field::UByte(x) => (*x).into(),
        Field::UShort(x) => (*x).into(),
        Field::UInt(x) => (*x).into(),
        Field::ULong(x) => (*x).into(),
        Field::Float16(x) => float(f64::from(*x)),
        Field::Float(x) => float(f64::from(*x)),
        Field::Double(x) => float(*x),
        Field::Str(s) => Value::String(s.clone()),
        // Binary columns written without a UTF-8 annotation usually still hold text.
        Field::Bytes(b) => match b.as_utf8() {
            Ok(s) => Value::String(s.to_string()),
            Err(_) => Value::String(format!("{field}")),
        },
        Field::Group(row) => {
            Value::Object(row.get_column_iter().map(|(name, f)| (name.clone(), field_to_json(f))).collect())
        }
        Field::ListInternal(list) => Value::Array(list.elements().iter().map(field_to_json).collect()),
        Field::MapInternal(map) => Value::Object(
            map.entries()
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Field::Str(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (key, field_to_json(v))
                })
                .collect(),
        ),
        // Dates, times and decimals have no role in these datasets; keep their text form.
        other => Value::String(other.to_string()),
    }
}

/// The JSON type name used in error messages ("expected a string, found number").
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}
