//! Loads each real dataset from `../shared/data` (relative to the project root; the environment
//! variable `BENIGN_DATA_DIR` overrides it, e.g. from a git worktree elsewhere) when it is there,
//! and checks split sizes and class counts against that folder's README. Prints the reason and
//! passes when a folder is absent: the project never requires the data.

use std::path::Path;
use std::time::Instant;

use benign::realdata::{
    default_dir, describe, load, patchify, subset_disjoint, DatasetName, RawDataset, Split, Tokens,
    Vocabulary, PAD_ID,
};

use super::{data_root, missing};

/// The loaded dataset, or None (with the reason printed) when its folder is absent.
fn load_if_present(name: DatasetName) -> Option<RawDataset> {
    let dir = default_dir(&data_root(), name);
    if !dir.is_dir() {
        missing(&format!("{name}: {} is absent", dir.display()));
        return None;
    }
    let start = Instant::now();
    let dataset = load(name, &dir).unwrap_or_else(|e| panic!("loading {name}: {e}"));
    println!(
        "{name}: loaded in {:.3} s: {}",
        start.elapsed().as_secs_f64(),
        serde_json::to_string(&describe(&dataset)).unwrap()
    );
    Some(dataset)
}

/// The dataset `name` when present, checked to hold `train` and `test` examples of each class
/// (and so their sums in all).
fn check(name: DatasetName, train: &[usize], test: &[usize]) -> Option<RawDataset> {
    let dataset = load_if_present(name)?;
    let summary = describe(&dataset);
    assert_eq!(summary.name, name);
    assert_eq!(summary.classes.len(), train.len(), "{name} classes");
    assert_eq!(summary.train.class_counts, train, "{name} train");
    assert_eq!(summary.test.class_counts, test, "{name} test");
    assert_eq!(summary.train.examples, train.iter().sum::<usize>());
    assert_eq!(summary.test.examples, test.iter().sum::<usize>());
    Some(dataset)
}

#[test]
fn mnist_matches_the_canonical_counts() {
    let train = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949];
    let test = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009];
    let Some(dataset) = check(DatasetName::Mnist, &train, &test) else {
        return;
    };
    let Split::Images(images) = &dataset.train else {
        panic!("MNIST holds images")
    };
    assert_eq!(
        (images.height, images.width, images.pixels.len()),
        (28, 28, 60_000 * 784)
    );
    // The first training image is a 5, with ink in its middle.
    assert_eq!(images.labels[0], 5);
    assert!(images.image(0)[14 * 28..15 * 28].iter().any(|&p| p > 200));
    let tokens = patchify(&images.select(&[0, 1, 2]).unwrap(), 4).unwrap();
    assert_eq!((tokens.n, tokens.seq_len), (3, 49));
}

#[test]
fn fashion_mnist_has_6000_and_1000_per_class() {
    check(DatasetName::FashionMnist, &[6000; 10], &[1000; 10]);
}

#[test]
fn breastmnist_has_the_canonical_split_sizes() {
    // 546 train / 156 test (the 78 validation images are not loaded); malignant is the minority.
    let Some(dataset) = check(DatasetName::BreastMnist, &[147, 399], &[42, 114]) else {
        return;
    };
    assert_eq!(describe(&dataset).train.image_size, Some([28, 28]));
    let val = benign::realdata::npz::load_breastmnist_split(
        &default_dir(&data_root(), DatasetName::BreastMnist),
        "val",
    )
    .unwrap();
    assert_eq!(val.len(), 78);
    // The issue-8 protocol: 200 clean pretraining examples and a disjoint fine-tuning set.
    let (pretrain, finetune) = subset_disjoint(&dataset.train, 200, 200, 0).unwrap();
    assert_eq!((pretrain.len(), finetune.len()), (200, 200));
    assert!(pretrain.iter().all(|i| finetune.binary_search(i).is_err()));
}

#[test]
fn trec_has_5452_train_and_500_test_questions() {
    // Li & Roth's coarse-class distribution, 5452 and 500 questions.
    let train_counts = [86, 1162, 1250, 1223, 835, 896];
    let test_counts = [9, 138, 94, 65, 81, 113];
    let Some(dataset) = check(DatasetName::Trec, &train_counts, &test_counts) else {
        return;
    };
    assert_eq!(
        describe(&dataset).classes,
        ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    );
    let Split::Text(train) = &dataset.train else {
        panic!("TREC holds text")
    };
    // TREC.train holds one latin-1 byte beyond ASCII; it must decode, not fail.
    assert!(train.texts.iter().any(|t| !t.is_ascii()));
    assert_eq!(
        train.texts[0],
        "How did serfdom develop in and then leave Russia ?"
    );
    assert_eq!(train.labels[0], 1); // DESC
    let vocab = Vocabulary::build(&train.texts, 1, 20_000).unwrap();
    let tokens = vocab.tokenize(train, 32).unwrap();
    let Tokens::Words { vocab_size, ids } = &tokens.tokens else {
        panic!("text tokens are words")
    };
    assert!(ids.iter().all(|&id| (id as usize) < *vocab_size));
    assert_ne!(ids[0], PAD_ID);
}

#[test]
fn sst2_has_the_kim_split_sizes() {
    // 6920 and 1821 sentences.
    check(DatasetName::Sst2, &[3310, 3610], &[912, 909]);
}

#[test]
fn agnews_has_1900_test_rows_a_class_and_the_tsv_subset() {
    let Some(dataset) = check(DatasetName::AgNews, &[2509, 2458, 2496, 2538], &[1900; 4]) else {
        return;
    };
    assert_eq!(dataset.classes, ["World", "Sports", "Business", "Sci/Tech"]);
    assert_eq!(dataset.train.len(), 10_001);
    let Split::Text(test) = &dataset.test else {
        panic!("AG news holds text")
    };
    // The escapes of the release are undone: no `\` line breaks, no `#39;` entities left.
    assert!(test
        .texts
        .iter()
        .all(|t| !t.contains('\\') && !t.contains("#39;")));
    assert!(test.texts[0].starts_with("Unions representing workers at Turner Newall"));
    assert_eq!(test.labels[0], 2); // "3" = Business
}

#[test]
fn every_dataset_name_round_trips_through_its_cli_spelling() {
    for name in DatasetName::ALL {
        assert_eq!(name.as_str().parse::<DatasetName>().unwrap(), name);
        let json = serde_json::to_string(&name).unwrap();
        assert_eq!(json, format!("\"{}\"", name.as_str()));
    }
    assert_eq!(
        "Fashion_MNIST".parse::<DatasetName>().unwrap(),
        DatasetName::FashionMnist
    );
    let err = "cifar10".parse::<DatasetName>().unwrap_err();
    assert_eq!(err.exit_code(), 2);
    // The command line's parser (clap, case ignored) takes the same spellings as `FromStr`.
    for text in [
        "mnist",
        "MNIST",
        "fashion-mnist",
        "Fashion_MNIST",
        "fashionmnist",
        "breastmnist",
        "breast-mnist",
        "trec",
        "sst2",
        "SST-2",
        "sst_2",
        "agnews",
        "ag-news",
        "AG_news",
    ] {
        let by_clap = <DatasetName as clap::ValueEnum>::from_str(text, true);
        assert_eq!(by_clap.ok(), text.parse::<DatasetName>().ok(), "{text}");
    }
    assert!(<DatasetName as clap::ValueEnum>::from_str("cifar10", true).is_err());
    let missing = load(DatasetName::Mnist, Path::new("/nonexistent/mnist")).unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/mnist"),
        "{missing}"
    );
}
