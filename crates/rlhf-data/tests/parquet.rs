//! Parquet datasets written by the test with the `parquet` crate's writer (Snappy, the codec of
//! Hugging Face datasets) in pyarrow's layout, then loaded back: string columns, a list of
//! {role, content} structs, lists of strings and of integers, and a bad row named by number.

mod common;

use common::scratch;
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use rlhf_data::{load_preferences, load_sft, tiny, LoadOptions, OnBadRecord};
use std::path::Path;
use std::sync::Arc;

/// Values and levels of one leaf column.
enum Column {
    Text(Vec<&'static str>, Vec<i16>, Vec<i16>),
    Int(Vec<i64>, Vec<i16>, Vec<i16>),
}

fn write_parquet(path: &Path, schema: &str, columns: Vec<Column>) {
    let schema = Arc::new(parse_message_type(schema).unwrap());
    let props = Arc::new(WriterProperties::builder().set_compression(Compression::SNAPPY).build());
    let mut writer = SerializedFileWriter::new(std::fs::File::create(path).unwrap(), schema, props).unwrap();
    let mut group = writer.next_row_group().unwrap();
    for column in columns {
        let mut out = group.next_column().unwrap().unwrap();
        match column {
            Column::Text(values, def, rep) => {
                let values: Vec<ByteArray> = values.into_iter().map(ByteArray::from).collect();
                let (def, rep) =
                    (Some(def.as_slice()).filter(|d| !d.is_empty()), Some(rep.as_slice()).filter(|r| !r.is_empty()));
                out.typed::<ByteArrayType>().write_batch(&values, def, rep).unwrap();
            }
            Column::Int(values, def, rep) => {
                out.typed::<Int64Type>().write_batch(&values, Some(&def), Some(&rep)).unwrap();
            }
        }
        out.close().unwrap();
    }
    group.close().unwrap();
    writer.close().unwrap();
}

/// `prompt` / `chosen` / `rejected` string columns.
fn write_pairs(path: &Path, prompts: Vec<&'static str>, chosen: Vec<&'static str>, rejected: Vec<&'static str>) {
    let schema = "message schema {
        REQUIRED BYTE_ARRAY prompt (UTF8);
        REQUIRED BYTE_ARRAY chosen (UTF8);
        REQUIRED BYTE_ARRAY rejected (UTF8);
    }";
    let text = |v: Vec<&'static str>| Column::Text(v, vec![], vec![]);
    write_parquet(path, schema, vec![text(prompts), text(chosen), text(rejected)]);
}

#[test]
fn string_pairs_and_a_bad_row() {
    let dir = scratch("parquet-pairs");
    let path = dir.join("pairs.parquet");
    write_pairs(&path, vec!["Q0", "Q1", "Q2"], vec!["a", "b", "c"], vec!["x", "", "z"]);
    let t = tiny::tokenizer();
    let err = load_preferences(&path, &t, &LoadOptions::default()).unwrap_err().to_string();
    assert_eq!(err, format!("{}:row 1: field \"rejected\": empty response", path.display()));
    let skip = LoadOptions { on_bad_record: OnBadRecord::Skip, ..LoadOptions::default() };
    let loaded = load_preferences(&path, &t, &skip).unwrap();
    assert_eq!((loaded.examples.len(), loaded.skipped.len()), (2, 1));
    assert_eq!(loaded.examples[1].prompt, t.encode("Q2", true).unwrap());
    assert_eq!(loaded.examples[1].pairs[0].0, [t.encode("c", false).unwrap(), vec![2]].concat());
}

#[test]
fn conversational_messages_column() {
    let dir = scratch("parquet-messages");
    let path = dir.join("sft.parquet");
    // pyarrow's layout of list<struct<role: string, content: string>>.
    let schema = "message schema {
        OPTIONAL group messages (LIST) {
            REPEATED group list {
                OPTIONAL group element {
                    OPTIONAL BYTE_ARRAY role (UTF8);
                    OPTIONAL BYTE_ARRAY content (UTF8);
                }
            }
        }
    }";
    // Row 0: user + assistant; row 1: user + assistant + user + assistant.
    let (def, rep) = (vec![4; 6], vec![0, 1, 0, 1, 1, 1]);
    write_parquet(
        &path,
        schema,
        vec![
            Column::Text(vec!["user", "assistant", "user", "assistant", "user", "assistant"], def.clone(), rep.clone()),
            Column::Text(vec!["hi", "hello", "1+1?", "2", "2+2?", "4"], def, rep),
        ],
    );
    let t = tiny::tokenizer();
    let examples = load_sft(&path, &t, &LoadOptions::default()).unwrap().examples;
    assert_eq!(examples.len(), 2);
    let learned = |i: usize| {
        let e = &examples[i];
        let ids: Vec<u32> = e.input_ids.iter().zip(&e.loss_mask).filter(|(_, &m)| m == 1).map(|(&id, _)| id).collect();
        t.decode(&ids, false).unwrap()
    };
    assert_eq!(learned(0), "hello<|im_end|>");
    assert_eq!(learned(1), "2<|im_end|>\n4<|im_end|>");
    assert_eq!(examples[1].source.to_string(), format!("{}:row 1", path.display()));
}

#[test]
fn rankings_with_list_columns() {
    let dir = scratch("parquet-rankings");
    let path = dir.join("rank.parquet");
    let schema = "message schema {
        REQUIRED BYTE_ARRAY prompt (UTF8);
        OPTIONAL group responses (LIST) { REPEATED group list { OPTIONAL BYTE_ARRAY element (UTF8); } }
        OPTIONAL group ranking (LIST) { REPEATED group list { OPTIONAL INT64 element; } }
    }";
    write_parquet(
        &path,
        schema,
        vec![
            Column::Text(vec!["Q"], vec![], vec![]),
            Column::Text(vec!["a", "b", "c"], vec![3; 3], vec![0, 1, 1]),
            Column::Int(vec![1, 2, 0], vec![3; 3], vec![0, 1, 1]),
        ],
    );
    let t = tiny::tokenizer();
    let g = &load_preferences(&path, &t, &LoadOptions::default()).unwrap().examples[0];
    let r = |s: &str| [t.encode(s, false).unwrap(), vec![2]].concat();
    assert_eq!(g.pairs, vec![(r("b"), r("c")), (r("b"), r("a")), (r("c"), r("a"))]);
}

/// Mutated Parquet files (footer, page headers, lengths, truncations) are errors naming the file
/// or bad records, never a panic.
#[test]
fn fuzzed_parquet_files_never_panic() {
    use rlhf_model::fuzz::{cases, Mutator};
    let dir = scratch("parquet-fuzz");
    let path = dir.join("pairs.parquet");
    write_pairs(&path, vec!["Q0", "Q1"], vec!["a", "b"], vec!["x", "y"]);
    let valid = std::fs::read(&path).unwrap();
    let case = dir.join("case.parquet");
    let t = tiny::tokenizer();
    let skip = LoadOptions { on_bad_record: OnBadRecord::Skip, ..LoadOptions::default() };
    for seed in 0..cases(1000) as u64 {
        std::fs::write(&case, Mutator::new(seed).mutate(&valid)).unwrap();
        let outcome = std::panic::catch_unwind(|| load_preferences(&case, &t, &skip).map(|_| ()));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => assert!(e.to_string().contains("case.parquet"), "seed {seed}: {e}"),
            Err(_) => panic!("seed {seed}: reading a mutated Parquet file panicked"),
        }
    }
}
