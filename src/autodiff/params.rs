//! Named parameters owned outside the per-step tape, in groups that set their own learning
//! rate and weight decay or are frozen (e.g. fine-tune only the last layer's query and key).
//!
//! Values are `Arc<Vec<T>>` so a tape reads them without copying ([`Tape::param`]); an optimizer
//! writes them in place once the tape that read them has been cleared (if a tape still holds a
//! parameter, the write copies it first, so the tape's recorded values stay valid).
//!
//! [`Tape::param`]: crate::autodiff::Tape::param

use std::sync::Arc;

use benign_kernels::Float;

use super::tensor::{Shape, Tensor};

/// Handle of a parameter in a [`ParamStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(pub(crate) usize);

impl ParamId {
    /// Position of the parameter in its store (the order it was added in).
    pub fn index(&self) -> usize {
        self.0
    }
}

/// Handle of a [`ParamGroup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupId(pub(crate) usize);

/// Optimizer settings shared by a set of parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamGroup {
    /// Name in reports and checkpoints.
    pub name: String,
    /// Learning rate for this group (`None`: the optimizer's).
    pub lr: Option<f64>,
    /// Weight decay for this group (`None`: the optimizer's).
    pub weight_decay: Option<f64>,
    /// Frozen parameters enter tapes as constants and are never updated.
    pub frozen: bool,
}

struct Param<T> {
    name: String,
    shape: Shape,
    value: Arc<Vec<T>>,
    group: usize,
    frozen: bool,
}

/// The parameters of a model.
pub struct ParamStore<T> {
    params: Vec<Param<T>>,
    groups: Vec<ParamGroup>,
}

impl<T: Float> Default for ParamStore<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Float> ParamStore<T> {
    /// A store with one group, `"default"`.
    pub fn new() -> Self {
        ParamStore {
            params: Vec::new(),
            groups: vec![ParamGroup {
                name: "default".into(),
                lr: None,
                weight_decay: None,
                frozen: false,
            }],
        }
    }

    /// The group every store starts with, `"default"`.
    pub fn default_group(&self) -> GroupId {
        GroupId(0)
    }

    /// Adds a group and returns its handle.
    pub fn add_group(&mut self, group: ParamGroup) -> GroupId {
        self.groups.push(group);
        GroupId(self.groups.len() - 1)
    }

    /// The settings of group `id`.
    pub fn group(&self, id: GroupId) -> &ParamGroup {
        &self.groups[id.0]
    }

    /// The settings of group `id`, mutable.
    pub fn group_mut(&mut self, id: GroupId) -> &mut ParamGroup {
        &mut self.groups[id.0]
    }

    /// Adds a parameter to the default group. Names must be unique.
    pub fn add(&mut self, name: &str, value: Tensor<T>) -> ParamId {
        self.add_to(GroupId(0), name, value)
    }

    /// Adds a parameter to `group`. Names must be unique (a repeated name panics).
    pub fn add_to(&mut self, group: GroupId, name: &str, value: Tensor<T>) -> ParamId {
        assert!(self.id(name).is_none(), "parameter `{name}` already exists");
        assert!(
            group.0 < self.groups.len(),
            "no parameter group {}",
            group.0
        );
        self.params.push(Param {
            name: name.to_string(),
            shape: value.shape,
            value: Arc::new(value.data),
            group: group.0,
            frozen: false,
        });
        ParamId(self.params.len() - 1)
    }

    /// The parameter named `name`, if any.
    pub fn id(&self, name: &str) -> Option<ParamId> {
        self.params.iter().position(|p| p.name == name).map(ParamId)
    }

    /// Every parameter, in the order added.
    pub fn ids(&self) -> impl Iterator<Item = ParamId> {
        (0..self.params.len()).map(ParamId)
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether the store holds no parameter.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Name of parameter `id`.
    pub fn name(&self, id: ParamId) -> &str {
        &self.params[id.0].name
    }

    /// Shape of parameter `id`.
    pub fn shape(&self, id: ParamId) -> Shape {
        self.params[id.0].shape
    }

    /// Values of parameter `id`, row-major over its shape.
    pub fn value(&self, id: ParamId) -> &[T] {
        &self.params[id.0].value
    }

    /// Mutable access (copies first only if a live tape still shares the value).
    pub fn value_mut(&mut self, id: ParamId) -> &mut [T] {
        Arc::make_mut(&mut self.params[id.0].value).as_mut_slice()
    }

    pub(crate) fn shared(&self, id: ParamId) -> &Arc<Vec<T>> {
        &self.params[id.0].value
    }

    /// The group parameter `id` belongs to.
    pub fn group_of(&self, id: ParamId) -> GroupId {
        GroupId(self.params[id.0].group)
    }

    /// Freezes (or unfreezes) one parameter: a frozen one enters tapes as a constant and is never
    /// updated.
    pub fn set_frozen(&mut self, id: ParamId, frozen: bool) {
        self.params[id.0].frozen = frozen;
    }

    /// Not frozen, and not in a frozen group.
    pub fn is_trainable(&self, id: ParamId) -> bool {
        let p = &self.params[id.0];
        !p.frozen && !self.groups[p.group].frozen
    }
}
