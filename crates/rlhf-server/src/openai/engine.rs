//! The generation engine behind `rlhf serve`: one thread owns the model; requests queue up while
//! a batch runs and the next batch takes all of them (each choice is a row with its own
//! temperature, top-p, seed and length limit). Text streams out as rows grow, never splitting a
//! UTF-8 character or showing the start of a stop string.
//!
//! Between batches the engine also takes the commands an RL trainer sends around a weight
//! update (SGLang's protocol): pause (no new batch starts; `abort` also fails the queued
//! requests), new weights from an HF folder with a version label that every later reply
//! carries, and continue; and vLLM's LoRA adapters: a PEFT folder loaded under a name (merged
//! into a copy of the adapted weights) that requests pick by `model`. A batch runs one model.

use candle_core::{DType, Device};
use rlhf_data::Tokenizer;
use rlhf_model::{generate_rows, CausalLm, FinishReason, RowSpec, SamplingParams, StopCondition};
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

/// A request's share of a batch: `plan.n` rows of one prompt.
pub struct Job {
    pub prompt: Vec<u32>,
    pub n: usize,
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    /// Alternatives per token to report (0: none).
    pub top_logprobs: usize,
    pub stop: Vec<String>,
    /// Choice k samples from random stream `first_stream + k` under `sampling.seed`.
    pub first_stream: u64,
    /// The LoRA adapter (by its name) to sample with; `None`: the base weights.
    pub adapter: Option<String>,
    pub events: UnboundedSender<Event>,
}

/// What a trainer asks of the engine around a weight update.
pub enum Control {
    /// Start no new batch until [`Control::Continue`]; with `abort`, fail the queued requests.
    /// Answered once the running batch (if any) is done, with the number of requests failed.
    Pause {
        abort: bool,
        done: oneshot::Sender<usize>,
    },
    Continue,
    /// Load the weights of the HF folder `path` (same architecture) and label them `version`.
    Update {
        path: PathBuf,
        version: String,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// The version label of the weights in use.
    Version {
        done: oneshot::Sender<String>,
    },
    /// Load the PEFT adapter folder `path` under `name` (replacing one of that name only with
    /// `replace`); later requests for model `name` sample with it.
    LoadAdapter {
        name: String,
        path: PathBuf,
        replace: bool,
        done: oneshot::Sender<Result<(), String>>,
    },
    UnloadAdapter {
        name: String,
        done: oneshot::Sender<Result<(), String>>,
    },
}

enum Msg {
    Job(Job),
    Control(Control),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// New text of one choice.
    Delta {
        choice: usize,
        text: String,
    },
    /// A choice is complete: its whole text (cut before a stop string), tokens and logprobs.
    Finished {
        choice: usize,
        text: String,
        tokens: Vec<u32>,
        logprobs: Vec<f32>,
        /// Per token, the `top_logprobs` most likely (token, logprob); empty if none were asked.
        top_logprobs: Vec<Vec<(u32, f32)>>,
        finish_reason: &'static str,
        /// The version label of the weights that sampled it.
        weight_version: Arc<str>,
    },
    Failed(String),
}

#[derive(Clone)]
pub struct EngineHandle {
    messages: mpsc::Sender<Msg>,
}

impl EngineHandle {
    pub fn submit(&self, job: Job) -> Result<(), String> {
        self.messages.send(Msg::Job(job)).map_err(|_| stopped())
    }

    pub fn control(&self, control: Control) -> Result<(), String> {
        self.messages.send(Msg::Control(control)).map_err(|_| stopped())
    }
}

fn stopped() -> String {
    "the generation engine has stopped".to_string()
}

#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Most rows in one batch (a request with more choices runs alone).
    pub max_batch: usize,
    /// After the first request of an idle engine, wait this long for others to join.
    pub gather: Duration,
}

/// Starts the engine thread with weights labelled `version`; it ends when every handle is dropped.
pub fn start(model: CausalLm, tokenizer: Arc<Tokenizer>, cfg: EngineConfig, version: String) -> EngineHandle {
    let (tx, rx) = mpsc::channel::<Msg>();
    std::thread::Builder::new()
        .name("generation".into())
        .spawn(move || {
            let engine = Engine {
                model,
                version: version.into(),
                adapters: BTreeMap::new(),
                queue: VecDeque::new(),
                paused: false,
            };
            engine.run(&rx, &tokenizer, cfg)
        })
        .expect("spawn the generation thread");
    EngineHandle { messages: tx }
}

struct Engine {
    model: CausalLm,
    version: Arc<str>,
    /// LoRA adapters by name: the served weights with the adapter merged, and the label replies
    /// carry (`name@n`, n counting the loads of that name).
    adapters: BTreeMap<String, (CausalLm, Arc<str>)>,
    queue: VecDeque<Job>,
    paused: bool,
}

impl Engine {
    fn run(mut self, rx: &mpsc::Receiver<Msg>, tok: &Tokenizer, cfg: EngineConfig) {
        loop {
            // Block for the next message while there is nothing to run.
            if self.paused || self.queue.is_empty() {
                match rx.recv() {
                    Ok(msg) => self.take(msg),
                    Err(_) => return,
                }
                continue;
            }
            // A batch is due: let others join it for `gather`, up to `max_batch` rows.
            let deadline = Instant::now() + cfg.gather;
            while !self.paused && self.queue.iter().map(|j| j.n).sum::<usize>() < cfg.max_batch {
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(msg) => self.take(msg),
                    Err(_) => break,
                }
            }
            if self.paused {
                continue;
            }
            // One model per batch: the first job's; the others wait for a batch of their own.
            let adapter = self.queue.front().and_then(|j| j.adapter.clone());
            let (mut jobs, mut rest) = (vec![], VecDeque::new());
            let mut rows = 0;
            while let Some(job) = self.queue.pop_front() {
                if job.adapter != adapter || (!jobs.is_empty() && rows + job.n > cfg.max_batch) {
                    rest.push_back(job);
                    continue;
                }
                rows += job.n;
                jobs.push(job);
            }
            self.queue = rest;
            match adapter.as_ref().and_then(|name| self.adapters.get(name)) {
                Some((model, version)) => run_batch(model, tok, jobs, version),
                None if adapter.is_some() => {
                    for job in jobs {
                        let _ = job.events.send(Event::Failed(format!(
                            "the LoRA adapter {:?} was unloaded before the request ran",
                            job.adapter.unwrap_or_default()
                        )));
                    }
                }
                None => run_batch(&self.model, tok, jobs, &self.version),
            }
        }
    }

    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Job(job) => self.queue.push_back(job),
            Msg::Control(Control::Pause { abort, done }) => {
                self.paused = true;
                let failed = if abort { self.queue.len() } else { 0 };
                if abort {
                    for job in self.queue.drain(..) {
                        let _ =
                            job.events.send(Event::Failed("aborted: generation was paused (pause_generation)".into()));
                    }
                }
                let _ = done.send(failed);
            }
            Msg::Control(Control::Continue) => self.paused = false,
            Msg::Control(Control::Update { path, version, done }) => {
                let _ = done.send(self.load(&path).map(|()| self.version = version.into()));
            }
            Msg::Control(Control::Version { done }) => {
                let _ = done.send(self.version.to_string());
            }
            Msg::Control(Control::LoadAdapter { name, path, replace, done }) => {
                let _ = done.send(self.load_adapter(name, &path, replace));
            }
            Msg::Control(Control::UnloadAdapter { name, done }) => {
                let found = self.adapters.remove(&name).is_some();
                let _ = done.send(if found { Ok(()) } else { Err(format!("no LoRA adapter named {name:?}")) });
            }
        }
    }

    fn load_adapter(&mut self, name: String, path: &std::path::Path, replace: bool) -> Result<(), String> {
        let loads = match self.adapters.get(&name) {
            Some(_) if !replace => {
                return Err(format!("a LoRA adapter named {name:?} is loaded (load_inplace: true replaces it)"))
            }
            Some((_, label)) => label.rsplit('@').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0) + 1,
            None => 1,
        };
        let error = |e: rlhf_model::ModelError| format!("{}: {e}", path.display());
        let (with_adapter, _) = self.model.load_lora(path).map_err(error)?;
        let merged = with_adapter.merge_lora().map_err(error)?;
        self.adapters.insert(name.clone(), (merged, format!("{name}@{loads}").into()));
        Ok(())
    }

    /// The weights of the HF folder at `path`, if they fit the model being served.
    fn load(&mut self, path: &std::path::Path) -> Result<(), String> {
        let model = CausalLm::load(path, DType::F32, &Device::Cpu).map_err(|e| format!("{}: {e}", path.display()))?;
        if model.config() != self.model.config() {
            return Err(format!(
                "{}: another architecture (config.json differs from the served model's)",
                path.display()
            ));
        }
        self.model = model;
        Ok(())
    }
}

/// Per-row streaming state, updated from inside the decoding loop.
struct Streamer<'a> {
    tok: &'a Tokenizer,
    /// (job index, choice) of each row.
    rows: Vec<(usize, usize)>,
    jobs: &'a [Job],
    /// Bytes of each row's text already sent.
    sent: RefCell<Vec<usize>>,
}

/// The text safe to show so far: up to a stop string if one appeared (and whether one did),
/// else without a trailing partial character or a possible stop-string start.
fn visible(text: &str, stops: &[String]) -> (usize, bool) {
    if let Some(cut) = stops.iter().filter_map(|s| text.find(s.as_str())).min() {
        return (cut, true);
    }
    let mut end = text.trim_end_matches('\u{FFFD}').len();
    for s in stops {
        for k in (1..s.len()).rev() {
            if s.is_char_boundary(k) && text[..end].ends_with(&s[..k]) {
                end = end.min(text[..end].len() - k);
                break;
            }
        }
    }
    (end, false)
}

impl StopCondition for Streamer<'_> {
    fn should_stop(&self, row: usize, response: &[u32]) -> bool {
        let (j, choice) = self.rows[row];
        let job = &self.jobs[j];
        let Ok(text) = self.tok.decode(response, true) else { return false };
        let (end, stopped) = visible(&text, &job.stop);
        let mut sent = self.sent.borrow_mut();
        if end > sent[row] && text.is_char_boundary(sent[row]) {
            let delta = text[sent[row]..end].to_string();
            sent[row] = end;
            if job.events.send(Event::Delta { choice, text: delta }).is_err() {
                return true; // the client went away: stop spending compute on it
            }
        }
        stopped
    }

    /// Every client of the batch went away: a long prefill stops at its next chunk.
    fn cancelled(&self) -> bool {
        self.jobs.iter().all(|job| job.events.is_closed())
    }
}

fn run_batch(model: &CausalLm, tok: &Tokenizer, jobs: Vec<Job>, version: &Arc<str>) {
    // Requests whose clients left while they queued are not started.
    let jobs: Vec<Job> = jobs.into_iter().filter(|job| !job.events.is_closed()).collect();
    if jobs.is_empty() {
        return;
    }
    let mut specs = vec![];
    let mut rows = vec![];
    for (j, job) in jobs.iter().enumerate() {
        for choice in 0..job.n {
            specs.push(RowSpec {
                prompt: job.prompt.clone(),
                sampling: job.sampling.clone(),
                stream: job.first_stream.wrapping_add(choice as u64),
                max_new_tokens: job.max_tokens,
                top_logprobs: job.top_logprobs,
            });
            rows.push((j, choice));
        }
    }
    let streamer = Streamer { tok, rows: rows.clone(), jobs: &jobs, sent: RefCell::new(vec![0; rows.len()]) };
    let out = generate_rows(model, &specs, &tok.eos_ids(), tok.pad_id(), Some(&streamer), &mut |_| {});
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            eprintln!("serve: generation stopped: {e}");
            for job in &jobs {
                let _ = job.events.send(Event::Failed(format!("generation failed: {e}")));
            }
            return;
        }
    };
    let sent = streamer.sent.into_inner();
    for (row, &(j, choice)) in rows.iter().enumerate() {
        let job = &jobs[j];
        let text = tok.decode(&out.response_ids[row], true).unwrap_or_default();
        let (end, stopped) = visible(&text, &job.stop);
        // What a stop string or a partial character held back, now final.
        let end = if stopped { end } else { text.len() };
        if end > sent[row] && text.is_char_boundary(sent[row]) {
            let _ = job.events.send(Event::Delta { choice, text: text[sent[row]..end].to_string() });
        }
        let finish_reason = match out.finish[row] {
            FinishReason::Length if !stopped => "length",
            _ => "stop",
        };
        let _ = job.events.send(Event::Finished {
            choice,
            text: text[..end].to_string(),
            tokens: out.response_ids[row].clone(),
            logprobs: out.response_logprobs[row].clone(),
            top_logprobs: out.response_top_logprobs[row].clone(),
            finish_reason,
            weight_version: version.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::visible;

    #[test]
    fn visible_text_holds_back_stop_prefixes_and_partial_characters() {
        let stops = vec!["\n\nUser:".to_string()];
        assert_eq!(visible("Hello", &stops), (5, false));
        assert_eq!(visible("Hello\n", &stops), (5, false), "a newline may start the stop string");
        assert_eq!(visible("Hello\n\nUs", &stops), (5, false));
        assert_eq!(visible("Hello\n\nUser: hi", &stops), (5, true));
        assert_eq!(visible("Hi\u{FFFD}", &[]), (2, false), "an incomplete UTF-8 sequence waits");
        assert_eq!(visible("a\nb", &stops), (3, false), "a newline followed by other text is text");
    }
}
