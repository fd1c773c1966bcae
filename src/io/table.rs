//! Flat CSV tables from nested records, for pandas, polars and spreadsheets.
//!
//! A record is serialized to JSON and flattened in field order: a nested object's fields become
//! columns named `outer_inner` (`attention_clean` -> `attention_clean_relevant`, ...), `null` an
//! empty cell, floats keep a decimal point or exponent ([`super::float_cell`]) so a column of
//! floats never loads as integers, integers stay integers, and arrays are written as their JSON
//! text in one cell. The header is the union of every record's columns in order of first
//! appearance, so a field that is `null` in the first rows still gets its column.

use std::fmt;
use std::path::Path;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Serialize;

use crate::{Error, Result};

/// One record as `(column, cell)` pairs in field order.
pub type FlatRow = Vec<(String, String)>;

/// Flattens a record (see the module documentation).
pub fn flatten<T: Serialize>(record: &T) -> Result<FlatRow> {
    let text = serde_json::to_string(record).map_err(|e| Error::Format {
        path: "<record>".into(),
        message: e.to_string(),
    })?;
    let mut row = Vec::new();
    let mut de = serde_json::Deserializer::from_str(&text);
    Flattener {
        prefix: String::new(),
        row: &mut row,
    }
    .visit(&mut de)
    .map_err(|e| Error::Format {
        path: "<record>".into(),
        message: e.to_string(),
    })?;
    Ok(row)
}

/// Writes flattened rows as CSV through the `csv` crate, atomically.
pub fn write_csv(path: &Path, rows: &[FlatRow]) -> Result<()> {
    let header = header(rows);
    super::write_atomic_with(path, |w| {
        let mut out = csv::Writer::from_writer(w);
        out.write_record(&header).map_err(std::io::Error::other)?;
        for row in rows {
            let cells: std::collections::HashMap<&str, &str> =
                row.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            out.write_record(header.iter().map(|h| cells.get(h).copied().unwrap_or("")))
                .map_err(std::io::Error::other)?;
        }
        out.flush()
    })
}

/// The union of the rows' columns in order of first appearance, except that a column that is
/// empty in every row and has columns nested under it (an object that is `null` in some rows)
/// gives way to those columns, placed where it stood.
fn header(rows: &[FlatRow]) -> Vec<&str> {
    let mut union: Vec<&str> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut filled = std::collections::HashSet::new();
    for row in rows {
        for (column, cell) in row {
            if seen.insert(column.as_str()) {
                union.push(column);
            }
            if !cell.is_empty() {
                filled.insert(column.as_str());
            }
        }
    }
    let nested_under = |outer: &str, column: &str| {
        column.len() > outer.len() + 1
            && column.starts_with(outer)
            && column.as_bytes()[outer.len()] == b'_'
    };
    let mut header = Vec::with_capacity(union.len());
    let mut placed = std::collections::HashSet::new();
    for &column in &union {
        if placed.contains(column) {
            continue;
        }
        let children: Vec<&str> = union
            .iter()
            .copied()
            .filter(|c| nested_under(column, c) && !placed.contains(c))
            .collect();
        if !filled.contains(column) && !children.is_empty() {
            for child in children {
                placed.insert(child);
                header.push(child);
            }
        } else {
            header.push(column);
        }
        placed.insert(column);
    }
    header
}

struct Flattener<'a> {
    prefix: String,
    row: &'a mut FlatRow,
}

impl Flattener<'_> {
    fn visit<'de, D: Deserializer<'de>>(self, de: D) -> std::result::Result<(), D::Error> {
        de.deserialize_any(self)
    }

    fn push(self, cell: String) {
        self.row.push((self.prefix, cell));
    }
}

impl<'de> Visitor<'de> for Flattener<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<(), E> {
        self.push(v.to_string());
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<(), E> {
        self.push(v.to_string());
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<(), E> {
        self.push(v.to_string());
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<(), E> {
        self.push(super::float_cell(v));
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<(), E> {
        self.push(v.to_string());
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<(), E> {
        self.push(String::new());
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> std::result::Result<(), E> {
        self.visit_unit()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<serde_json::Value>()? {
            items.push(item);
        }
        self.push(serde_json::Value::Array(items).to_string());
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            let prefix = if self.prefix.is_empty() {
                key
            } else {
                format!("{}_{key}", self.prefix)
            };
            map.next_value_seed(Flattener {
                prefix,
                row: &mut *self.row,
            })?;
        }
        Ok(())
    }
}

impl<'de> de::DeserializeSeed<'de> for Flattener<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> std::result::Result<(), D::Error> {
        self.visit(de)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Inner {
        b: f64,
        a: f64,
    }

    #[derive(Serialize)]
    struct Record {
        step: usize,
        loss: f64,
        name: &'static str,
        nested: Option<Inner>,
        list: Vec<u32>,
        flag: bool,
    }

    #[test]
    fn records_flatten_in_field_order_with_floats_kept() {
        let row = flatten(&Record {
            step: 3,
            loss: 5.0,
            name: "x",
            nested: Some(Inner {
                b: 1e-7,
                a: f64::NAN,
            }),
            list: vec![1, 2],
            flag: true,
        })
        .unwrap();
        let expected = [
            ("step", "3"),
            ("loss", "5.0"),
            ("name", "x"),
            ("nested_b", "1e-7"),
            ("nested_a", ""),
            ("list", "[1,2]"),
            ("flag", "true"),
        ];
        // NaN serializes as JSON null, hence an empty cell.
        let got: Vec<(&str, &str)> = row.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn the_header_is_the_union_of_columns() {
        let dir = std::env::temp_dir().join(format!("benign-table-{}", std::process::id()));
        let path = dir.join("t.csv");
        let first = flatten(&Record {
            step: 0,
            loss: 1.0,
            name: "a",
            nested: None,
            list: vec![],
            flag: false,
        })
        .unwrap();
        let second = flatten(&Record {
            step: 1,
            loss: 0.5,
            name: "b,c",
            nested: Some(Inner { b: 2.0, a: 3.0 }),
            list: vec![],
            flag: false,
        })
        .unwrap();
        write_csv(&path, &[first, second]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "step,loss,name,nested_b,nested_a,list,flag\n\
             0,1.0,a,,,[],false\n\
             1,0.5,\"b,c\",2.0,3.0,[],false\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
