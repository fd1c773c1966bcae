//! Classifier checkpoints in the safetensors format.
//!
//! Tensors: `param.<name>` for every parameter (f32 or f64, the model's element type), and when
//! training state is saved `adam_m.<name>` / `adam_v.<name>` for every parameter the optimizer
//! has updated. Metadata (string to string): `format` (`benign-classifier/1`), `model` (the
//! [`ModelConfig`] as JSON), `state` (epochs and steps done, AdamW step counts, as JSON) and any
//! caller entries (e.g. the checkpoint key, the vocabulary of a text model, the metrics).
//! Files are written atomically (temporary file, fsync, rename).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use benign_kernels::Float;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use super::model::{Classifier, ModelConfig};
use super::train::{ClassifierTrainer, Moments};
use crate::{Error, Result};

/// The value of the `format` metadata entry.
pub const FORMAT: &str = "benign-classifier/1";

/// Training progress stored with the parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    /// Training epochs completed; a resumed run continues with the next one.
    pub epochs_done: usize,
    /// Optimizer steps taken so far, which place the learning-rate schedule.
    pub steps_done: usize,
    /// AdamW step count of each parameter with saved moments, by name.
    pub adam_steps: BTreeMap<String, i32>,
}

/// A loaded checkpoint.
pub struct Checkpoint<T: Float> {
    /// The classifier, its configuration read from the `model` metadata entry.
    pub model: Classifier<T>,
    /// Progress at the time of saving (all zero if the model was saved without its trainer).
    pub state: TrainingState,
    /// The optimizer's moments (empty if none were saved).
    pub moments: Vec<Moments<T>>,
    /// Caller metadata entries (everything except `format`, `model` and `state`).
    pub metadata: BTreeMap<String, String>,
}

fn format_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn to_bytes<T: Float>(values: &[T]) -> Vec<u8> {
    if std::mem::size_of::<T>() == 4 {
        values
            .iter()
            .flat_map(|&v| (v.to_f64() as f32).to_le_bytes())
            .collect()
    } else {
        values
            .iter()
            .flat_map(|&v| v.to_f64().to_le_bytes())
            .collect()
    }
}

fn dtype_of<T>() -> Dtype {
    if std::mem::size_of::<T>() == 4 {
        Dtype::F32
    } else {
        Dtype::F64
    }
}

fn from_view<T: Float>(path: &Path, name: &str, view: &TensorView<'_>) -> Result<Vec<T>> {
    let data = view.data();
    match view.dtype() {
        Dtype::F32 => Ok(data
            .chunks_exact(4)
            .map(|b| T::from_f64(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))))
            .collect()),
        Dtype::F64 => Ok(data
            .chunks_exact(8)
            .map(|b| {
                T::from_f64(f64::from_le_bytes([
                    b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                ]))
            })
            .collect()),
        other => Err(format_error(
            path,
            format!("tensor `{name}` has dtype {other:?}, expected F32 or F64"),
        )),
    }
}

/// Writes `model` (and, if given, the trainer's progress and optimizer state) to `path`
/// atomically, with the caller's `metadata` entries.
pub fn save<T: Float>(
    path: &Path,
    model: &Classifier<T>,
    trainer: Option<&ClassifierTrainer<T>>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let store = &model.store;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = store
        .ids()
        .map(|id| {
            (
                format!("param.{}", store.name(id)),
                store.shape(id).dims().to_vec(),
                to_bytes(store.value(id)),
            )
        })
        .collect();
    let mut state = TrainingState::default();
    if let Some(trainer) = trainer {
        state.epochs_done = trainer.epochs_done;
        state.steps_done = trainer.steps_done;
        for moments in trainer.moments(model) {
            let name = store.name(moments.param);
            let dims = store.shape(moments.param).dims().to_vec();
            state.adam_steps.insert(name.to_string(), moments.step);
            tensors.push((format!("adam_m.{name}"), dims.clone(), to_bytes(&moments.m)));
            tensors.push((format!("adam_v.{name}"), dims, to_bytes(&moments.v)));
        }
    }
    let mut info: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    info.insert("format".into(), FORMAT.into());
    info.insert("model".into(), to_json(&model.config));
    info.insert("state".into(), to_json(&state));
    let views = tensors
        .iter()
        .map(|(name, dims, bytes)| {
            TensorView::new(dtype_of::<T>(), dims.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| format_error(path, format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::tensor::serialize(views, Some(info))
        .map_err(|e| format_error(path, format!("cannot serialize the checkpoint: {e}")))?;
    crate::io::write_atomic(path, &bytes)
}

fn to_json<S: Serialize>(value: &S) -> String {
    serde_json::to_string(value).expect("plain data serializes to JSON")
}

/// Reads a checkpoint written by [`save`], checking every parameter's presence and shape.
pub fn load<T: Float>(path: &Path) -> Result<Checkpoint<T>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| format_error(path, format!("not a safetensors file: {e}")))?;
    let mut metadata: BTreeMap<String, String> = header
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    match metadata.remove("format").as_deref() {
        Some(FORMAT) => {}
        other => {
            return Err(format_error(
                path,
                format!("metadata `format` is {other:?}, expected \"{FORMAT}\""),
            ))
        }
    }
    let parse = |key: &str, text: Option<String>| -> Result<String> {
        text.ok_or_else(|| format_error(path, format!("metadata entry `{key}` is missing")))
    };
    let config: ModelConfig = serde_json::from_str(&parse("model", metadata.remove("model"))?)
        .map_err(|e| format_error(path, format!("metadata `model`: {e}")))?;
    let state: TrainingState = serde_json::from_str(&parse("state", metadata.remove("state"))?)
        .map_err(|e| format_error(path, format!("metadata `state`: {e}")))?;
    let tensors = SafeTensors::deserialize(&bytes)
        .map_err(|e| format_error(path, format!("not a safetensors file: {e}")))?;
    // A model of the configuration gives names and shapes; its random values are overwritten.
    let mut model = Classifier::<T>::new(config, &mut ChaCha8Rng::seed_from_u64(0))
        .map_err(|e| format_error(path, format!("metadata `model`: {e}")))?;
    let read = |prefix: &str, id| -> Result<Option<Vec<T>>> {
        let name = format!("{prefix}.{}", model.store.name(id));
        let view = match tensors.tensor(&name) {
            Ok(view) => view,
            Err(_) => return Ok(None),
        };
        let expected = model.store.shape(id);
        if view.shape() != expected.dims() {
            return Err(format_error(
                path,
                format!(
                    "tensor `{name}` has shape {:?}, expected {:?}",
                    view.shape(),
                    expected.dims()
                ),
            ));
        }
        from_view(path, &name, &view).map(Some)
    };
    let ids: Vec<_> = model.store.ids().collect();
    let mut values = Vec::with_capacity(ids.len());
    let mut moments = Vec::new();
    for &id in &ids {
        let name = model.store.name(id).to_string();
        let value = read("param", id)?
            .ok_or_else(|| format_error(path, format!("tensor `param.{name}` is missing")))?;
        values.push(value);
        if let Some(&step) = state.adam_steps.get(&name) {
            let (m, v) = (read("adam_m", id)?, read("adam_v", id)?);
            let (Some(m), Some(v)) = (m, v) else {
                return Err(format_error(
                    path,
                    format!("optimizer moments of `{name}` are missing"),
                ));
            };
            moments.push(Moments {
                param: id,
                step,
                m,
                v,
            });
        }
    }
    for (id, value) in ids.into_iter().zip(values) {
        model.store.value_mut(id).copy_from_slice(&value);
    }
    Ok(Checkpoint {
        model,
        state,
        moments,
        metadata,
    })
}
