//! The labelling queue in SQLite: items (a prompt and its K responses), annotators (hashed
//! tokens), assignments (who sees which item, in which order) and submissions.
//!
//! WAL mode with `synchronous=FULL`: a submission is acknowledged only after its transaction is on
//! disk, so a killed server loses nothing it has answered for. Every statement is parameterised.

use super::agreement::Judgement;
use super::error::{LabelError, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Shown on the task page until an admin edits it.
pub const DEFAULT_GUIDELINES: &str = "Rank the responses from best (top) to worst.\n\n\
- Helpful: does it answer what was asked, completely and directly?\n\
- Truthful: is every claim and every number correct? A confident wrong answer is worse than a hedge.\n\
- Harmless: does it avoid dangerous, hateful or private content?\n\n\
When two responses are equally good, mark them as tied. Flag an item as unsafe if the prompt or a \
response needs review, or as broken if it cannot be judged (garbled, empty, wrong language).";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    prompt TEXT NOT NULL,
    prompt_json TEXT NOT NULL,
    source TEXT,
    overlap_draw REAL NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS responses (
    id INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items(id),
    position INTEGER NOT NULL,
    text TEXT NOT NULL,
    temperature REAL,
    model TEXT,
    UNIQUE (item_id, position)
);
CREATE TABLE IF NOT EXISTS annotators (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('annotator', 'admin')),
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS assignments (
    id INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items(id),
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    response_order TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (item_id, annotator_id)
);
CREATE INDEX IF NOT EXISTS assignments_by_annotator ON assignments (annotator_id);
CREATE TABLE IF NOT EXISTS submissions (
    assignment_id INTEGER PRIMARY KEY REFERENCES assignments(id),
    action TEXT NOT NULL CHECK (action IN ('submit', 'skip', 'flag')),
    ranking TEXT,
    flag TEXT CHECK (flag IS NULL OR flag IN ('unsafe', 'broken')),
    comment TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Annotator,
    Admin,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Annotator => "annotator",
            Role::Admin => "admin",
        }
    }
    fn parse(s: &str) -> Role {
        if s == "admin" {
            Role::Admin
        } else {
            Role::Annotator
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewResponse {
    pub text: String,
    pub temperature: Option<f64>,
    pub model: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewItem {
    /// The prompt as annotators read it.
    pub prompt: String,
    /// The prompt as the dataset wrote it (a string or a list of messages), for export. `None`
    /// stores `prompt` as a string.
    pub prompt_json: Option<serde_json::Value>,
    /// Where the item came from (e.g. `prompts.jsonl:12`).
    pub source: Option<String>,
    pub responses: Vec<NewResponse>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Annotator {
    pub id: i64,
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskResponse {
    pub id: i64,
    pub text: String,
}

/// One assignment as its annotator sees it: responses in that annotator's own random order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    pub assignment: i64,
    pub item: i64,
    pub prompt: String,
    pub responses: Vec<TaskResponse>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
}

/// What an annotator sends for one assignment, already validated against the item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "action")]
pub enum Decision {
    Submit { ranking: Vec<Vec<i64>> },
    Skip,
    Flag { flag: String },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredSubmission {
    pub assignment: i64,
    pub item: i64,
    pub annotator: String,
    pub action: String,
    pub tiers: Vec<Vec<i64>>,
    pub flag: Option<String>,
    pub comment: Option<String>,
}

/// How items are shared out: a fraction `overlap` of items goes to `overlap_annotators`
/// annotators (for agreement), the rest to one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Allocation {
    pub overlap: f64,
    pub overlap_annotators: usize,
}

impl Default for Allocation {
    fn default() -> Self {
        Allocation { overlap: 0.2, overlap_annotators: 2 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ItemCounts {
    pub total: usize,
    pub complete: usize,
    pub in_progress: usize,
    pub flagged: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnnotatorCounts {
    pub name: String,
    pub role: Role,
    pub done: usize,
    pub skipped: usize,
    pub flagged: usize,
    pub open: usize,
}

/// An item with its responses, for export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportItem {
    pub id: i64,
    pub prompt_json: serde_json::Value,
    /// (response id, text) in stored order.
    pub responses: Vec<(i64, String)>,
    pub flagged: bool,
}

/// (action, ranking JSON, flag, comment) as a submissions row holds them.
type StoredAnswer = (String, Option<String>, Option<String>, Option<String>);

pub struct LabelDb {
    conn: Connection,
    path: PathBuf,
}

/// SHA-256 of a token, hex: only this is stored, so a leaked database leaks no tokens.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

impl LabelDb {
    /// Opens (creating if needed) a labelling database.
    pub fn open(path: &Path) -> Result<LabelDb> {
        let conn = Connection::open(path).map_err(|e| LabelError::db(path, e))?;
        let db = LabelDb { conn, path: path.to_path_buf() };
        db.conn
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
                 PRAGMA busy_timeout = 10000;",
            )
            .map_err(|e| db.err(e))?;
        db.conn.execute_batch(SCHEMA).map_err(|e| db.err(e))?;
        Ok(db)
    }

    /// Opens a database that must already exist: the read-only commands (stats, export) would
    /// otherwise create an empty one at a mistyped path and report or write nothing, exit 0.
    pub fn open_existing(path: &Path) -> Result<LabelDb> {
        if !path.is_file() {
            return Err(LabelError::Io(format!(
                "{}: no labelling database there (`rlhf collect --db` and `rlhf label add-annotator` create one)",
                path.display()
            )));
        }
        Self::open(path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> LabelError {
        LabelError::db(&self.path, e)
    }

    /// Adds one prompt with its responses; at least two distinct, non-empty responses.
    pub fn add_item(&mut self, item: &NewItem) -> Result<i64> {
        if item.prompt.trim().is_empty() {
            return Err(LabelError::invalid("prompt", "is empty"));
        }
        if item.responses.len() < 2 {
            return Err(LabelError::invalid("responses", format!("needs at least 2, got {}", item.responses.len())));
        }
        let prompt_json = item.prompt_json.clone().unwrap_or_else(|| serde_json::Value::String(item.prompt.clone()));
        let draw: f64 = rand::rng().random();
        let tx = self.conn.transaction().map_err(|e| LabelError::db(&self.path, e))?;
        tx.execute(
            "INSERT INTO items (prompt, prompt_json, source, overlap_draw) VALUES (?1, ?2, ?3, ?4)",
            params![item.prompt, prompt_json.to_string(), item.source, draw],
        )
        .map_err(|e| LabelError::db(&self.path, e))?;
        let id = tx.last_insert_rowid();
        for (position, r) in item.responses.iter().enumerate() {
            tx.execute(
                "INSERT INTO responses (item_id, position, text, temperature, model) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, position as i64, r.text, r.temperature, r.model],
            )
            .map_err(|e| LabelError::db(&self.path, e))?;
        }
        tx.commit().map_err(|e| LabelError::db(&self.path, e))?;
        Ok(id)
    }

    /// Creates an annotator and returns their token; it is shown once and stored only hashed.
    pub fn add_annotator(&mut self, name: &str, role: Role) -> Result<String> {
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(LabelError::invalid("name", "must be 1–64 printable characters"));
        }
        let bytes: [u8; 24] = rand::rng().random();
        let token: String =
            std::iter::once("rlhf_".to_string()).chain(bytes.iter().map(|b| format!("{b:02x}"))).collect();
        let inserted = self.conn.execute(
            "INSERT INTO annotators (name, role, token_hash) VALUES (?1, ?2, ?3)",
            params![name, role.as_str(), hash_token(&token)],
        );
        match inserted {
            Ok(_) => Ok(token),
            Err(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                Err(LabelError::invalid("name", format!("annotator {name:?} already exists")))
            }
            Err(e) => Err(self.err(e)),
        }
    }

    pub fn annotator_by_token(&self, token: &str) -> Result<Option<Annotator>> {
        self.conn
            .query_row("SELECT id, name, role FROM annotators WHERE token_hash = ?1", [hash_token(token)], |r| {
                Ok(Annotator { id: r.get(0)?, name: r.get(1)?, role: Role::parse(&r.get::<_, String>(2)?) })
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn annotators(&self) -> Result<Vec<Annotator>> {
        let mut st = self.conn.prepare("SELECT id, name, role FROM annotators ORDER BY id").map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok(Annotator { id: r.get(0)?, name: r.get(1)?, role: Role::parse(&r.get::<_, String>(2)?) })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    pub fn guidelines(&self) -> Result<String> {
        let text: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'guidelines'", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(text.unwrap_or_else(|| DEFAULT_GUIDELINES.to_string()))
    }

    pub fn set_guidelines(&mut self, text: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES ('guidelines', ?1) ON CONFLICT (key) DO UPDATE SET value = ?1",
                [text],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The annotator's open assignment, or a new one: items already started by others first (so
    /// overlapping items complete), never one this annotator has seen. `None` when nothing is left.
    pub fn next_task(&mut self, annotator: &Annotator, alloc: Allocation) -> Result<Option<Task>> {
        let path = self.path.clone();
        let dberr = |e| LabelError::db(&path, e);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(dberr)?;
        let open: Option<i64> = tx
            .query_row(
                "SELECT a.id FROM assignments a LEFT JOIN submissions s ON s.assignment_id = a.id
                 WHERE a.annotator_id = ?1 AND s.assignment_id IS NULL ORDER BY a.id LIMIT 1",
                [annotator.id],
                |r| r.get(0),
            )
            .optional()
            .map_err(dberr)?;
        let assignment = match open {
            Some(id) => id,
            None => {
                let item: Option<i64> = tx
                    .query_row(
                        &format!("SELECT i.id FROM items i {AVAILABLE} ORDER BY taken DESC, i.id LIMIT 1"),
                        params![annotator.id, alloc.overlap, alloc.overlap_annotators as i64],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(dberr)?;
                let Some(item) = item else {
                    tx.commit().map_err(dberr)?;
                    return Ok(None);
                };
                let mut ids = response_ids(&tx, item).map_err(dberr)?;
                ids.shuffle(&mut rand_chacha::ChaCha8Rng::from_rng(&mut rand::rng()));
                tx.execute(
                    "INSERT INTO assignments (item_id, annotator_id, response_order) VALUES (?1, ?2, ?3)",
                    params![item, annotator.id, serde_json::to_string(&ids).unwrap_or_default()],
                )
                .map_err(dberr)?;
                tx.last_insert_rowid()
            }
        };
        let task = load_task(&tx, assignment).map_err(dberr)?;
        tx.commit().map_err(dberr)?;
        Ok(Some(task))
    }

    pub fn progress(&self, annotator: &Annotator, alloc: Allocation) -> Result<Progress> {
        let (done, open): (i64, i64) = self
            .conn
            .query_row(
                "SELECT COUNT(s.assignment_id), COUNT(*) - COUNT(s.assignment_id) FROM assignments a
                 LEFT JOIN submissions s ON s.assignment_id = a.id WHERE a.annotator_id = ?1",
                [annotator.id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.err(e))?;
        let available: i64 = self
            .conn
            .query_row(
                &format!("SELECT COUNT(*) FROM (SELECT i.id FROM items i {AVAILABLE})"),
                params![annotator.id, alloc.overlap, alloc.overlap_annotators as i64],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        Ok(Progress { done: done as usize, total: (done + open + available) as usize })
    }

    /// Stores a decision for `assignment`, which must be the annotator's. Resending the decision
    /// already stored succeeds as a duplicate (a client retrying after a lost reply); a
    /// different one is refused.
    pub fn submit(
        &mut self,
        annotator: &Annotator,
        assignment: i64,
        decision: &Decision,
        comment: Option<&str>,
    ) -> Result<bool> {
        let path = self.path.clone();
        let dberr = |e| LabelError::db(&path, e);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(dberr)?;
        let item: Option<i64> = tx
            .query_row(
                "SELECT item_id FROM assignments WHERE id = ?1 AND annotator_id = ?2",
                params![assignment, annotator.id],
                |r| r.get(0),
            )
            .optional()
            .map_err(dberr)?;
        let Some(item) = item else {
            return Err(LabelError::NotYours(assignment));
        };
        let (ranking, flag) = match decision {
            Decision::Submit { ranking } => {
                validate_ranking(ranking, &response_ids(&tx, item).map_err(dberr)?)?;
                (Some(serde_json::to_string(ranking).unwrap_or_default()), None)
            }
            Decision::Skip => (None, None),
            Decision::Flag { flag } => {
                if flag != "unsafe" && flag != "broken" {
                    return Err(LabelError::invalid("flag", format!("must be \"unsafe\" or \"broken\", got {flag:?}")));
                }
                (None, Some(flag.clone()))
            }
        };
        let action = action_name(decision);
        let existing: Option<StoredAnswer> = tx
            .query_row(
                "SELECT action, ranking, flag, comment FROM submissions WHERE assignment_id = ?1",
                [assignment],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(dberr)?;
        if let Some(stored) = existing {
            if stored == (action.to_string(), ranking, flag, comment.map(str::to_string)) {
                return Ok(true);
            }
            return Err(LabelError::AlreadySubmitted(assignment));
        }
        tx.execute(
            "INSERT INTO submissions (assignment_id, action, ranking, flag, comment) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![assignment, action, ranking, flag, comment],
        )
        .map_err(dberr)?;
        tx.commit().map_err(dberr)?;
        Ok(false)
    }

    pub fn submissions(&self) -> Result<Vec<StoredSubmission>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT a.id, a.item_id, n.name, s.action, s.ranking, s.flag, s.comment FROM submissions s
                 JOIN assignments a ON a.id = s.assignment_id JOIN annotators n ON n.id = a.annotator_id
                 ORDER BY a.id",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                let ranking: Option<String> = r.get(4)?;
                Ok(StoredSubmission {
                    assignment: r.get(0)?,
                    item: r.get(1)?,
                    annotator: r.get(2)?,
                    action: r.get(3)?,
                    tiers: ranking.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default(),
                    flag: r.get(5)?,
                    comment: r.get(6)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// Every ranking (action `submit`), as agreement statistics take them.
    pub fn judgements(&self) -> Result<Vec<Judgement>> {
        Ok(self
            .submissions()?
            .into_iter()
            .filter(|s| s.action == "submit")
            .map(|s| Judgement { item: s.item, annotator: s.annotator, tiers: s.tiers })
            .collect())
    }

    pub fn item_counts(&self) -> Result<ItemCounts> {
        self.conn
            .query_row(
                "SELECT COUNT(*),
                        COALESCE(SUM(done > 0 AND open = 0), 0),
                        COALESCE(SUM(open > 0), 0),
                        COALESCE(SUM(flagged > 0), 0)
                 FROM (SELECT i.id,
                         (SELECT COUNT(*) FROM assignments a JOIN submissions s ON s.assignment_id = a.id
                            WHERE a.item_id = i.id AND s.action != 'skip') AS done,
                         (SELECT COUNT(*) FROM assignments a LEFT JOIN submissions s ON s.assignment_id = a.id
                            WHERE a.item_id = i.id AND s.assignment_id IS NULL) AS open,
                         (SELECT COUNT(*) FROM assignments a JOIN submissions s ON s.assignment_id = a.id
                            WHERE a.item_id = i.id AND s.action = 'flag') AS flagged
                       FROM items i)",
                [],
                |r| {
                    Ok(ItemCounts {
                        total: r.get::<_, i64>(0)? as usize,
                        complete: r.get::<_, i64>(1)? as usize,
                        in_progress: r.get::<_, i64>(2)? as usize,
                        flagged: r.get::<_, i64>(3)? as usize,
                    })
                },
            )
            .map_err(|e| self.err(e))
    }

    pub fn annotator_counts(&self) -> Result<Vec<AnnotatorCounts>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT n.name, n.role,
                        COALESCE(SUM(s.action = 'submit'), 0), COALESCE(SUM(s.action = 'skip'), 0),
                        COALESCE(SUM(s.action = 'flag'), 0), COUNT(a.id) - COUNT(s.assignment_id)
                 FROM annotators n LEFT JOIN assignments a ON a.annotator_id = n.id
                 LEFT JOIN submissions s ON s.assignment_id = a.id GROUP BY n.id ORDER BY n.id",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok(AnnotatorCounts {
                    name: r.get(0)?,
                    role: Role::parse(&r.get::<_, String>(1)?),
                    done: r.get::<_, i64>(2)? as usize,
                    skipped: r.get::<_, i64>(3)? as usize,
                    flagged: r.get::<_, i64>(4)? as usize,
                    open: r.get::<_, i64>(5)? as usize,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// Items with their responses; `flagged` when any annotator flagged the item.
    pub fn export_items(&self) -> Result<Vec<ExportItem>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT i.id, i.prompt_json, EXISTS (SELECT 1 FROM assignments a JOIN submissions s
                   ON s.assignment_id = a.id WHERE a.item_id = i.id AND s.action = 'flag') FROM items i ORDER BY i.id",
            )
            .map_err(|e| self.err(e))?;
        let items = st
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, bool>(2)?)))
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        let mut st = self
            .conn
            .prepare("SELECT item_id, id, text FROM responses ORDER BY item_id, position")
            .map_err(|e| self.err(e))?;
        let mut responses: std::collections::HashMap<i64, Vec<(i64, String)>> = Default::default();
        let rows = st
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))
            .map_err(|e| self.err(e))?;
        for row in rows {
            let (item, id, text) = row.map_err(|e| self.err(e))?;
            responses.entry(item).or_default().push((id, text));
        }
        Ok(items
            .into_iter()
            .map(|(id, prompt, flagged)| ExportItem {
                id,
                prompt_json: serde_json::from_str(&prompt).unwrap_or(serde_json::Value::String(prompt)),
                responses: responses.remove(&id).unwrap_or_default(),
                flagged,
            })
            .collect())
    }
}

/// Items this annotator may still get: not seen by them, and fewer live assignments (open or
/// answered, skips not counted) than the item's target. `taken` orders partly-done items first.
/// Parameters: ?1 annotator id, ?2 overlap share, ?3 annotators per overlapping item.
const AVAILABLE: &str = "JOIN (SELECT i2.id AS item_id, (SELECT COUNT(*) FROM assignments a LEFT JOIN submissions s
        ON s.assignment_id = a.id WHERE a.item_id = i2.id AND (s.action IS NULL OR s.action != 'skip')) AS taken
      FROM items i2) t ON t.item_id = i.id
    WHERE NOT EXISTS (SELECT 1 FROM assignments a WHERE a.item_id = i.id AND a.annotator_id = ?1)
      AND NOT EXISTS (SELECT 1 FROM assignments a JOIN submissions s ON s.assignment_id = a.id
                      WHERE a.item_id = i.id AND s.action = 'flag')
      AND t.taken < CASE WHEN i.overlap_draw < ?2 THEN ?3 ELSE 1 END";

fn action_name(d: &Decision) -> &'static str {
    match d {
        Decision::Submit { .. } => "submit",
        Decision::Skip => "skip",
        Decision::Flag { .. } => "flag",
    }
}

fn response_ids(conn: &Connection, item: i64) -> rusqlite::Result<Vec<i64>> {
    let mut st = conn.prepare("SELECT id FROM responses WHERE item_id = ?1 ORDER BY position")?;
    let ids = st.query_map([item], |r| r.get(0))?.collect();
    ids
}

fn load_task(conn: &Connection, assignment: i64) -> rusqlite::Result<Task> {
    let (item, prompt, order): (i64, String, String) = conn.query_row(
        "SELECT i.id, i.prompt, a.response_order FROM assignments a JOIN items i ON i.id = a.item_id WHERE a.id = ?1",
        [assignment],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let order: Vec<i64> = serde_json::from_str(&order).unwrap_or_default();
    let mut st = conn.prepare("SELECT id, text FROM responses WHERE item_id = ?1")?;
    let mut texts: std::collections::HashMap<i64, String> =
        st.query_map([item], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
    let responses = order.iter().filter_map(|id| texts.remove(id).map(|text| TaskResponse { id: *id, text })).collect();
    Ok(Task { assignment, item, prompt, responses })
}

/// A ranking must place every response of the item exactly once, in non-empty tiers.
pub fn validate_ranking(tiers: &[Vec<i64>], item_responses: &[i64]) -> Result<()> {
    if tiers.is_empty() {
        return Err(LabelError::invalid("ranking", "is empty; rank every response"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (t, tier) in tiers.iter().enumerate() {
        if tier.is_empty() {
            return Err(LabelError::invalid("ranking", format!("tier {t} is empty")));
        }
        for &id in tier {
            if !item_responses.contains(&id) {
                return Err(LabelError::invalid(
                    "ranking",
                    format!("response {id} is not one of this item's responses {item_responses:?}"),
                ));
            }
            if !seen.insert(id) {
                return Err(LabelError::invalid("ranking", format!("response {id} appears more than once")));
            }
        }
    }
    let missing: Vec<i64> = item_responses.iter().copied().filter(|id| !seen.contains(id)).collect();
    if !missing.is_empty() {
        return Err(LabelError::invalid("ranking", format!("responses {missing:?} are missing; rank every response")));
    }
    Ok(())
}

/// How annotators read a dataset prompt: a string as is; a conversation as its messages, each
/// headed by its role (a lone user message without a heading).
pub fn prompt_text(prompt: &serde_json::Value) -> String {
    match prompt {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(messages) => {
            let parts: Vec<(String, String)> = messages
                .iter()
                .map(|m| {
                    let field = |k: &str| m.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
                    (field("role"), field("content"))
                })
                .collect();
            match parts.as_slice() {
                [(role, content)] if role == "user" => content.clone(),
                _ => parts.iter().map(|(r, c)| format!("[{r}]\n{c}")).collect::<Vec<_>>().join("\n\n"),
            }
        }
        other => other.to_string(),
    }
}
