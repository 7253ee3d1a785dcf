//! The batch parsers under random and mutated input (a bounded fuzz run in every test run):
//! whatever the bytes, they answer a problem or rows, never panic, and never echo more than a
//! bounded part of the input. Valid rows read back exactly what was written, however quoted.

use api::batch::{drafts, parse_csv, parse_json};
use model::Asset;
use proptest::prelude::*;

const ASSETS: [Asset; 3] = [Asset::USDC, Asset::ETH, Asset::BTC];

fn bounded(problem: &api::problem::Problem) {
    let body = &problem.0;
    assert!(body.detail.len() < 1_024, "{}", body.detail.len());
    for row in &body.errors {
        assert!(row.message.len() < 1_024, "{}", row.message.len());
    }
}

fn exercise(bytes: &[u8]) {
    for parsed in [parse_json(bytes), parse_csv(bytes)] {
        match parsed {
            Ok(rows) => {
                if let Err(problem) = drafts(rows, &ASSETS) {
                    bounded(&problem);
                }
            }
            Err(problem) => bounded(&problem),
        }
    }
}

const VALID_CSV: &str = "\u{feff}reference,amount,asset,destination,networks,class,deadline_ms\r\n\"inv, 1\",12.5,USDC,0x52908400098527886E0F7030069857D2E4169EE7,base|optimism,standard,\r\ninv-2,0.000001,USDC,0x8617e340b3d01fa5f11f306f4090fd50e238070d,base,urgent,1800000000000\r\n";
const VALID_JSON: &str = r#"{"payments":[{"reference":"inv-1","amount":"12.5","asset":"USDC","destination":"0x52908400098527886E0F7030069857D2E4169EE7","networks":["base"],"class":"standard"}]}"#;

proptest! {
    #![proptest_config(ProptestConfig { cases: 3_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2_048)) {
        exercise(&bytes);
    }

    #[test]
    fn mutated_batches_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        json in any::<bool>(),
    ) {
        let mut bytes = if json { VALID_JSON.as_bytes().to_vec() } else { VALID_CSV.as_bytes().to_vec() };
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        bytes.truncate(cut.index(bytes.len() + 1).max(1));
        exercise(&bytes);
    }

    #[test]
    fn csv_rows_read_back_as_written(references in proptest::collection::vec("[a-zA-Z0-9 ,\"\\-]{1,40}", 1..20)) {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(["reference", "amount", "asset", "destination", "networks", "class"]).unwrap();
        for (i, reference) in references.iter().enumerate() {
            writer.write_record([reference.as_str(), &format!("{i}.5"), "USDC", "0x8617e340b3d01fa5f11f306f4090fd50e238070d", "base", "bulk"]).unwrap();
        }
        let rows = parse_csv(&writer.into_inner().unwrap()).unwrap();
        prop_assert_eq!(rows.len(), references.len());
        for (row, reference) in rows.iter().zip(&references) {
            prop_assert_eq!(&row.reference, reference);
        }
    }
}

#[test]
fn the_valid_examples_read() {
    let rows = parse_csv(VALID_CSV.as_bytes()).unwrap();
    assert_eq!(rows[0].reference, "inv, 1");
    assert_eq!(rows[0].networks, ["base", "optimism"]);
    assert_eq!(rows[1].deadline_ms, Some(1_800_000_000_000));
    let drafts = drafts(rows, &ASSETS).unwrap();
    assert_eq!(drafts[0].amount, Asset::USDC.parse_amount("12.5").unwrap());
    assert_eq!(parse_json(VALID_JSON.as_bytes()).unwrap().len(), 1);
}
