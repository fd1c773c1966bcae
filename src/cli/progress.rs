//! Progress and messages on stderr, for a person at a terminal and for a batch log.
//!
//! On a terminal a long command draws a bar with its rate and ETA. When stderr is not a terminal
//! (a Slurm job, `2> log`, a pipe) a bar would print nothing until the end, so the same progress
//! is written as plain lines instead, at most one every `--log-every` seconds, each stamped with
//! the UTC time; events that happen a few times per job (a start-up phase, an epoch, the shard
//! chosen) are written as they happen. `--log-format json` writes every line as one JSON object.
//! Warnings always print, `--quiet` or not.
//!
//! The library reports its phases and warnings through the `log` facade; [`Logger`] routes them
//! here, so they interleave cleanly with the bar or the progress lines.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};

use benign::provenance::utc_timestamp;

/// Seconds between progress lines in a batch log, when not given.
pub const DEFAULT_LOG_EVERY: f64 = 10.0;

/// How progress and messages are written (flattened into every long command).
#[derive(Args, Clone, Debug)]
pub struct LogArgs {
    /// No progress bar or progress lines (warnings and errors still print).
    #[arg(long)]
    pub quiet: bool,
    /// Seconds between progress lines when stderr is not a terminal (batch jobs, log files).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_LOG_EVERY, value_parser = parse_log_every)]
    pub log_every: f64,
    /// Format of the lines written to stderr when it is not a terminal; `json` writes one
    /// object per line, on a terminal too.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The format of progress lines and messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `2026-12-05T19:04:05Z sweep: 120/1521 runs (7.9%), ...`
    Text,
    /// `{"time": "2026-12-05T19:04:05Z", "command": "sweep", "event": "progress", ...}`
    Json,
}

fn parse_log_every(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if v.is_finite() && (0.0..=86_400.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("must be from 0 to 86400 seconds, got {text}"))
    }
}

/// A value shown next to the progress: a float (with the decimals to show) or a count.
#[derive(Clone, Debug)]
pub enum Field {
    Float(f64, usize),
    Count(u64),
}

impl Field {
    fn text(&self) -> String {
        match self {
            Field::Float(v, decimals) => format!("{v:.decimals$}"),
            Field::Count(v) => v.to_string(),
        }
    }

    fn json(&self) -> Value {
        match self {
            Field::Float(v, _) => {
                serde_json::Number::from_f64(*v).map_or(Value::Null, Value::Number)
            }
            Field::Count(v) => Value::from(*v),
        }
    }
}

enum Mode {
    /// Nothing but warnings.
    Quiet,
    Bar(ProgressBar),
    Lines {
        every: Duration,
        format: LogFormat,
    },
}

struct Inner {
    command: &'static str,
    unit: &'static str,
    mode: Mode,
    started: Instant,
    state: Mutex<State>,
}

struct State {
    total: u64,
    done: u64,
    /// Work already done before this process started (resumed jobs): not part of the rate.
    skipped: u64,
    last_line: Instant,
    fields: Vec<(&'static str, Field)>,
}

/// The progress of one command: a bar on a terminal, rate-limited lines otherwise.
#[derive(Clone)]
pub struct Reporter {
    inner: Arc<Inner>,
}

/// The reporter that library log records are routed to.
static CURRENT: Mutex<Option<Reporter>> = Mutex::new(None);

impl Reporter {
    /// Starts reporting `command`'s progress in `unit`s (a total of 0 until [`Reporter::set_total`]).
    /// `phases`: whether the library's phase messages (log level info) are shown; a sweep turns
    /// them off, since every run has the same phases.
    pub fn start(args: &LogArgs, command: &'static str, unit: &'static str, phases: bool) -> Self {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let mode = if args.quiet {
            Mode::Quiet
        } else if terminal && args.log_format == LogFormat::Text {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{{bar:30}} {{pos}}/{{len}} {unit}  {{per_sec}}  ETA {{eta}}  {{msg}}"
                ))
                .expect("valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            Mode::Bar(bar)
        } else {
            Mode::Lines {
                every: Duration::from_secs_f64(args.log_every),
                format: args.log_format,
            }
        };
        let now = Instant::now();
        let reporter = Reporter {
            inner: Arc::new(Inner {
                command,
                unit,
                mode,
                started: now,
                state: Mutex::new(State {
                    total: 0,
                    done: 0,
                    skipped: 0,
                    last_line: now,
                    fields: Vec::new(),
                }),
            }),
        };
        install_logger();
        log::set_max_level(if phases && !args.quiet {
            log::LevelFilter::Info
        } else {
            log::LevelFilter::Warn
        });
        *lock(&CURRENT) = Some(reporter.clone());
        reporter
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    /// Sets the amount of work, and how much of it was done before this process started.
    pub fn set_total(&self, total: u64, skipped: u64) {
        let mut state = self.state();
        state.total = total;
        state.skipped = skipped;
        state.done = state.done.max(skipped);
        if let Mode::Bar(bar) = &self.inner.mode {
            bar.set_length(total);
            bar.set_position(state.done);
        }
    }

    /// Records progress: `done` units of the total, with the latest values to show. Writes a
    /// line when the last one is at least `--log-every` seconds old.
    pub fn update(&self, done: u64, fields: Vec<(&'static str, Field)>) {
        let mut state = self.state();
        state.done = done;
        state.fields = fields;
        match &self.inner.mode {
            Mode::Quiet => {}
            Mode::Bar(bar) => {
                bar.set_position(done);
                bar.set_message(field_text(&state.fields));
            }
            Mode::Lines { every, format } => {
                let now = Instant::now();
                if now.duration_since(state.last_line) >= *every {
                    state.last_line = now;
                    let line = self.progress_line(&state, *format, "progress");
                    drop(state);
                    eprintln!("{line}");
                }
            }
        }
    }

    /// Units done so far.
    pub fn done(&self) -> u64 {
        self.state().done
    }

    /// Adds one unit of progress (work finished out of order, e.g. sweep runs).
    pub fn increment(&self, fields: Vec<(&'static str, Field)>) {
        let done = self.state().done + 1;
        self.update(done, fields);
    }

    /// Writes a line about an event now (an epoch finished, the shard chosen), whatever the
    /// rate limit; on a terminal it is printed above the bar.
    pub fn event(&self, message: &str, fields: Vec<(&'static str, Field)>) {
        match &self.inner.mode {
            Mode::Quiet => {}
            Mode::Bar(bar) => {
                let mut text = message.to_string();
                if !fields.is_empty() {
                    text.push_str(": ");
                    text.push_str(&field_text(&fields));
                }
                bar.println(text);
            }
            Mode::Lines { format, .. } => {
                eprintln!(
                    "{}",
                    message_line(self.inner.command, *format, "event", message, &fields)
                );
            }
        }
    }

    /// Shows a phase of the work (a start-up step) on the bar, or as a line.
    fn phase(&self, message: &str) {
        match &self.inner.mode {
            Mode::Quiet => {}
            Mode::Bar(bar) => bar.set_message(message.to_string()),
            Mode::Lines { format, .. } => {
                eprintln!(
                    "{}",
                    message_line(self.inner.command, *format, "phase", message, &[])
                );
            }
        }
    }

    /// Ends the progress: clears the bar, or writes a last progress line.
    pub fn finish(&self) {
        match &self.inner.mode {
            Mode::Quiet => {}
            Mode::Bar(bar) => bar.finish_and_clear(),
            Mode::Lines { format, .. } => {
                let state = self.state();
                eprintln!("{}", self.progress_line(&state, *format, "finished"));
            }
        }
        let mut current = lock(&CURRENT);
        if current
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(&r.inner, &self.inner))
        {
            *current = None;
        }
    }

    fn progress_line(&self, state: &State, format: LogFormat, event: &str) -> String {
        let elapsed = self.inner.started.elapsed().as_secs_f64();
        let fresh = state.done.saturating_sub(state.skipped);
        let rate = (elapsed > 0.0).then(|| fresh as f64 / elapsed);
        let remaining = state.total.saturating_sub(state.done);
        let eta = rate
            .filter(|&r| r > 0.0)
            .map(|r| remaining as f64 / r)
            .filter(|_| state.total > 0);
        let (command, unit) = (self.inner.command, self.inner.unit);
        match format {
            LogFormat::Text => {
                let mut line = format!("{} {command}: {}", now_stamp(), state.done);
                if state.total > 0 {
                    let percent = 100.0 * state.done as f64 / state.total as f64;
                    line.push_str(&format!("/{} {unit} ({percent:.1}%)", state.total));
                } else {
                    line.push_str(&format!(" {unit}"));
                }
                if let Some(rate) = rate {
                    line.push_str(&format!(", {} {unit}/s", significant(rate)));
                }
                line.push_str(&format!(", {} elapsed", duration_text(elapsed)));
                if let Some(eta) = eta.filter(|_| event == "progress") {
                    line.push_str(&format!(", ETA {}", duration_text(eta)));
                }
                if event == "finished" {
                    line.push_str(", finished");
                }
                if !state.fields.is_empty() {
                    line.push_str("; ");
                    line.push_str(&field_text(&state.fields));
                }
                line
            }
            LogFormat::Json => json_line(
                command,
                event,
                [
                    ("done", Value::from(state.done)),
                    ("total", Value::from(state.total)),
                    ("unit", Value::from(unit)),
                    ("elapsed_seconds", json_float(elapsed)),
                    ("rate_per_second", rate.map_or(Value::Null, json_float)),
                    ("eta_seconds", eta.map_or(Value::Null, json_float)),
                ],
                &state.fields,
            ),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_stamp() -> String {
    utc_timestamp(SystemTime::now())
}

fn json_float(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// A rate with three significant digits (`0.0123`, `12.3`, `1234`).
fn significant(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// `42 s`, `3 min 05 s`, `2 h 03 min`.
fn duration_text(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s < 60 {
        format!("{:.1} s", seconds.max(0.0))
    } else if s < 3600 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{} h {:02} min", s / 3600, s / 60 % 60)
    }
}

fn field_text(fields: &[(&'static str, Field)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{} {}", k.replace('_', " "), v.text()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A message line: `<time> <command>: <message>[: fields]` or its JSON object.
fn message_line(
    command: &str,
    format: LogFormat,
    event: &str,
    message: &str,
    fields: &[(&'static str, Field)],
) -> String {
    match format {
        LogFormat::Text => {
            let mut line = format!("{} {command}: {message}", now_stamp());
            if !fields.is_empty() {
                line.push_str(": ");
                line.push_str(&field_text(fields));
            }
            line
        }
        LogFormat::Json => json_line(command, event, [("message", Value::from(message))], fields),
    }
}

/// One JSON log line: the time, the command and the event, then `entries`, then `fields`.
fn json_line<const N: usize>(
    command: &str,
    event: &str,
    entries: [(&str, Value); N],
    fields: &[(&'static str, Field)],
) -> String {
    let mut object = Map::new();
    object.insert("time".into(), Value::from(now_stamp()));
    object.insert("command".into(), Value::from(command));
    object.insert("event".into(), Value::from(event));
    for (key, value) in entries {
        object.insert(key.into(), value);
    }
    for (key, field) in fields {
        object.insert((*key).into(), field.json());
    }
    Value::Object(object).to_string()
}

/// Routes the library's `log` records: warnings always (above the bar, or as lines), phase
/// messages to the current reporter.
struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level() && metadata.target().starts_with("benign")
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        let current = lock(&CURRENT).clone();
        if record.level() <= log::Level::Warn {
            let (command, format) = match &current {
                Some(r) => (
                    r.inner.command,
                    match &r.inner.mode {
                        Mode::Lines { format, .. } => *format,
                        _ => LogFormat::Text,
                    },
                ),
                None => ("benign", LogFormat::Text),
            };
            let line = match format {
                LogFormat::Text => format!("warning: {message}"),
                LogFormat::Json => message_line(command, format, "warning", &message, &[]),
            };
            match current.as_ref().map(|r| &r.inner.mode) {
                Some(Mode::Bar(bar)) => bar.suspend(|| eprintln!("{line}")),
                _ => eprintln!("{line}"),
            }
        } else if let Some(reporter) = current {
            reporter.phase(&message);
        }
    }

    fn flush(&self) {}
}

fn install_logger() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // Fails only if another logger is installed, which this binary never does.
        let _ = log::set_logger(&Logger);
    });
}

/// Installs the logger with warnings only, for commands without progress (their library
/// warnings still reach stderr).
pub fn warnings_only() {
    install_logger();
    log::set_max_level(log::LevelFilter::Warn);
}
