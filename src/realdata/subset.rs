//! Seeded subsets of a split: the clean pretraining subset and, disjoint from it, the
//! fine-tuning subset of the real-data protocol (paper section 5).
//!
//! Class-stratified draws give each class `floor(n * c_k / N)` examples (`c_k` of the `N`
//! candidates are in class `k`), and hand the remaining ones to the classes with the largest
//! fractional parts (ties to the lower class index), so class proportions match the candidates'
//! as closely as whole numbers allow. Inside each class, the examples are a partial
//! Fisher-Yates shuffle of that class's candidates in index order, driven by a ChaCha8 stream
//! derived from the seed. A uniform draw is the same shuffle over all candidates. The result is
//! sorted by index; the same (labels, n, seed, exclusion) always gives the same subset.
//!
//! For two disjoint subsets, draw the first, then the second with the first as `exclude`:
//! [`subset_disjoint`] does it (the two draws use different streams of the seed).

use rand::Rng;

use super::Split;
use crate::seed::named_rng;
use crate::{Error, Result};

/// How a subset is drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sampling {
    /// Class proportions kept (see the module docs).
    #[default]
    Stratified,
    /// Every `n`-subset equally likely.
    Uniform,
}

/// A class-stratified subset of `n` examples of `split`, as sorted indices.
pub fn subset(split: &Split, n: usize, seed: u64) -> Result<Vec<usize>> {
    draw(
        split.labels(),
        split.num_classes(),
        n,
        seed,
        Sampling::Stratified,
        &[],
        "subset",
    )
}

/// Two disjoint class-stratified subsets of `split`, of `n_first` and `n_second` examples (the
/// pretraining and the fine-tuning subset), as sorted indices. The first equals
/// `subset(split, n_first, seed)`, so a pretraining run and a later fine-tuning run agree on it.
pub fn subset_disjoint(
    split: &Split,
    n_first: usize,
    n_second: usize,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let first = subset(split, n_first, seed)?;
    let second = draw(
        split.labels(),
        split.num_classes(),
        n_second,
        seed,
        Sampling::Stratified,
        &first,
        "subset-second",
    )?;
    Ok((first, second))
}

/// The general draw: `n` indices of `labels` (classes below `num_classes`) not in `exclude`,
/// sampled as `sampling` says from the ChaCha8 stream named `stream` of `seed`. `n` larger than
/// the candidates is an [`Error::InvalidOption`] naming `subset`.
pub fn draw(
    labels: &[u32],
    num_classes: usize,
    n: usize,
    seed: u64,
    sampling: Sampling,
    exclude: &[usize],
    stream: &str,
) -> Result<Vec<usize>> {
    let mut excluded = vec![false; labels.len()];
    for &i in exclude {
        if let Some(flag) = excluded.get_mut(i) {
            *flag = true;
        }
    }
    let candidates: Vec<usize> = (0..labels.len()).filter(|&i| !excluded[i]).collect();
    if n > candidates.len() {
        return Err(Error::invalid(
            "subset",
            format!(
                "{n} examples requested, but only {} are available ({} in the split, {} \
                 excluded)",
                candidates.len(),
                labels.len(),
                labels.len() - candidates.len()
            ),
        ));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= num_classes) {
        return Err(Error::invalid(
            "labels",
            format!("label {bad} is not below the {num_classes} classes"),
        ));
    }
    let mut rng = named_rng(seed, stream);
    let mut chosen = match sampling {
        Sampling::Uniform => partial_shuffle(candidates, n, &mut rng),
        Sampling::Stratified => {
            let mut by_class = vec![Vec::new(); num_classes];
            for &i in &candidates {
                by_class[labels[i] as usize].push(i);
            }
            let counts: Vec<usize> = by_class.iter().map(Vec::len).collect();
            let quotas = stratified_quotas(&counts, n);
            let mut chosen = Vec::with_capacity(n);
            for (pool, quota) in by_class.into_iter().zip(quotas) {
                chosen.extend(partial_shuffle(pool, quota, &mut rng));
            }
            chosen
        }
    };
    chosen.sort_unstable();
    Ok(chosen)
}

/// Largest-remainder allocation of `n` over classes of sizes `counts` (`n <= sum(counts)`).
pub fn stratified_quotas(counts: &[usize], n: usize) -> Vec<usize> {
    let total: usize = counts.iter().sum();
    if total == 0 {
        return vec![0; counts.len()];
    }
    // Exact integer arithmetic: quota_k = floor(n c_k / N), remainder (n c_k) mod N.
    let mut quotas: Vec<usize> = Vec::with_capacity(counts.len());
    let mut remainders: Vec<(u128, usize)> = Vec::with_capacity(counts.len());
    for (k, &c) in counts.iter().enumerate() {
        let product = n as u128 * c as u128;
        quotas.push((product / total as u128) as usize);
        remainders.push((product % total as u128, k));
    }
    let mut left = n - quotas.iter().sum::<usize>();
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, k) in remainders.iter().cycle() {
        if left == 0 {
            break;
        }
        if quotas[k] < counts[k] {
            quotas[k] += 1;
            left -= 1;
        }
    }
    quotas
}

/// The first `take` elements of a Fisher-Yates shuffle of `pool`.
fn partial_shuffle(mut pool: Vec<usize>, take: usize, rng: &mut impl Rng) -> Vec<usize> {
    for i in 0..take {
        let j = rng.random_range(i..pool.len());
        pool.swap(i, j);
    }
    pool.truncate(take);
    pool
}

#[cfg(test)]
mod tests {
    use super::super::TextSplit;
    use super::*;

    fn labels_split(labels: Vec<u32>, num_classes: usize) -> Split {
        Split::Text(TextSplit {
            texts: labels.iter().map(|l| format!("text {l}")).collect(),
            labels,
            num_classes,
        })
    }

    #[test]
    fn quotas_follow_proportions_and_sum_to_n() {
        assert_eq!(stratified_quotas(&[50, 30, 20], 10), [5, 3, 2]);
        assert_eq!(stratified_quotas(&[1, 1, 1], 2), [1, 1, 0]);
        assert_eq!(stratified_quotas(&[10, 0, 5], 15), [10, 0, 5]);
        assert_eq!(stratified_quotas(&[0, 0], 0), [0, 0]);
        for n in 0..=37 {
            let q = stratified_quotas(&[17, 3, 9, 8], n);
            assert_eq!(q.iter().sum::<usize>(), n);
            assert!(q.iter().zip([17, 3, 9, 8]).all(|(a, b)| *a <= b));
        }
    }

    #[test]
    fn stratified_subset_is_seeded_sorted_and_balanced() {
        let labels: Vec<u32> = (0..1000).map(|i| (i % 10) as u32).collect();
        let split = labels_split(labels.clone(), 10);
        let a = subset(&split, 100, 7).unwrap();
        assert_eq!(a, subset(&split, 100, 7).unwrap());
        assert_ne!(a, subset(&split, 100, 8).unwrap());
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        let mut per_class = [0; 10];
        for &i in &a {
            per_class[labels[i] as usize] += 1;
        }
        assert_eq!(per_class, [10; 10]);
    }

    #[test]
    fn disjoint_draws_do_not_overlap_and_first_matches_subset() {
        let labels: Vec<u32> = (0..300).map(|i| u32::from(i % 3 == 0)).collect();
        let split = labels_split(labels, 2);
        let (first, second) = subset_disjoint(&split, 200, 100, 3).unwrap();
        assert_eq!(first, subset(&split, 200, 3).unwrap());
        assert_eq!(first.len() + second.len(), 300);
        assert!(first.iter().all(|i| second.binary_search(i).is_err()));
        let err = subset_disjoint(&split, 200, 101, 3).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidOption { field, .. } if field == "subset"),
            "{err}"
        );
    }

    #[test]
    fn uniform_draw_covers_every_index_over_seeds() {
        let labels = vec![0u32; 20];
        let mut seen = [0usize; 20];
        for seed in 0..200 {
            let chosen = draw(&labels, 1, 5, seed, Sampling::Uniform, &[], "u").unwrap();
            assert_eq!(chosen.len(), 5);
            for i in chosen {
                seen[i] += 1;
            }
        }
        // Each index is expected 50 times; a broken shuffle (e.g. always the prefix) fails.
        assert!(seen.iter().all(|&s| (25..=80).contains(&s)), "{seen:?}");
    }

    #[test]
    fn too_large_and_bad_labels_are_errors() {
        let split = labels_split(vec![0, 1, 1], 2);
        assert!(subset(&split, 4, 0).is_err());
        assert_eq!(subset(&split, 3, 0).unwrap(), [0, 1, 2]);
        assert!(subset(&split, 0, 0).unwrap().is_empty());
        let err = draw(&[0, 5], 2, 1, 0, Sampling::Stratified, &[], "s").unwrap_err();
        assert!(err.to_string().contains("label 5"), "{err}");
    }
}
