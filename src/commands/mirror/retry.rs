//! `--retry-failed REPORT`: the images an earlier run's report lists as
//! failed, so that a run can take only those.

use super::plan::Item;

/// What a previous report lists as failed: images by (source, target), and
/// sources whose listing failed (a repository or a prefix), for
/// `--retry-failed`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Failed {
    pub images: std::collections::BTreeSet<(String, String)>,
    pub listings: Vec<String>,
}

/// The most bytes of a report read back (a report lists every image once).
const MAX_REPORT_BYTES: u64 = 256 * 1024 * 1024;

impl Failed {
    /// Reads what failed from a report `--report` or `--json` wrote.
    pub fn read(path: &std::path::Path) -> crate::error::Result<Failed> {
        use std::io::Read;
        let what = path.display();
        let file =
            std::fs::File::open(path).map_err(|e| crate::error::Error::path("open", path, e))?;
        let mut bytes = Vec::new();
        file.take(MAX_REPORT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| crate::error::Error::path("read", path, e))?;
        if bytes.len() as u64 > MAX_REPORT_BYTES {
            return Err(crate::error::Error::Usage(format!(
                "{what}: over {MAX_REPORT_BYTES} bytes; not a sync report"
            )));
        }
        Failed::parse(&bytes)
            .map_err(|e| crate::error::Error::Usage(format!("{what}: not a sync report: {e}")))
    }

    pub fn parse(bytes: &[u8]) -> std::result::Result<Failed, String> {
        #[derive(serde::Deserialize)]
        struct Row {
            source: String,
            target: String,
            action: String,
            #[serde(default)]
            listing_failed: bool,
        }
        #[derive(serde::Deserialize)]
        struct Wire {
            images: Vec<Row>,
        }
        let wire: Wire = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let mut failed = Failed::default();
        for row in wire.images.into_iter().filter(|r| r.action == "failed") {
            if row.listing_failed {
                failed.listings.push(row.source);
            } else {
                failed.images.insert((row.source, row.target));
            }
        }
        Ok(failed)
    }

    /// Is `item` one of those that failed (an image, or an image of a
    /// source whose listing failed)?
    pub fn covers(&self, item: &Item) -> bool {
        // As a report names them.
        if self
            .images
            .contains(&(item.source.to_string(), item.target.to_string()))
        {
            return true;
        }
        let repository = format!("{}/{}", item.source.domain, item.source.path);
        self.listings.iter().any(|l| {
            repository == *l || repository.starts_with(&format!("{}/", l.trim_end_matches('/')))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty() && self.listings.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_gives_its_failed_images_and_listings() {
        let report = br#"{"images":[
            {"source":"r.example/a:1","target":"m.example/a:1","action":"copied"},
            {"source":"r.example/b:1","target":"m.example/b:1","action":"failed"},
            {"source":"r.example/team","target":"m.example/team","action":"failed","listing_failed":true},
            {"source":"r.example/c:1","target":"m.example/c:1","action":"up-to-date"}
        ],"copied":1}"#;
        let failed = Failed::parse(report).unwrap();
        assert_eq!(
            failed.images.iter().cloned().collect::<Vec<_>>(),
            [("r.example/b:1".to_string(), "m.example/b:1".to_string())]
        );
        assert_eq!(failed.listings, ["r.example/team"]);
        assert!(!failed.is_empty());
        assert!(Failed::parse(br#"{"images":[]}"#).unwrap().is_empty());
        assert!(Failed::parse(b"version: 1").is_err());
        assert!(Failed::parse(br#"{"images":[{"source":1}]}"#).is_err());
    }
}
