//! The store operations behind the docker-style commands: listing images by filter, history
//! with layer sizes, disk usage, rmi and prune. Data in, data out; `cli/store.rs` prints.
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use super::{ImageRecord, Store};
use crate::digest::Digest;
use crate::image::oci::{History, ImageConfig};
use crate::reference::Reference;
use crate::{Error, Result};

/// `images --filter`, docker's keys: `dangling=true|false`, `reference=PATTERN` (repeatable,
/// any may match), `label=KEY[=VALUE]` (repeatable, all must match), `before=IMAGE` and
/// `since=IMAGE` (created before / after that image).
#[derive(Debug, Default, Clone)]
pub struct ImageFilter {
    pub dangling: Option<bool>,
    pub references: Vec<String>,
    pub labels: Vec<(String, Option<String>)>,
    pub before: Option<String>,
    pub since: Option<String>,
}

impl ImageFilter {
    /// Parses docker's `KEY=VALUE` filters.
    pub fn parse(filters: &[String]) -> Result<Self> {
        let mut f = ImageFilter::default();
        for s in filters {
            match s.split_once('=') {
                Some(("dangling", v)) => f.dangling = Some(matches!(v, "true" | "1")),
                Some(("reference", p)) => f.references.push(p.to_string()),
                Some(("label", kv)) => f.labels.push(match kv.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (kv.to_string(), None),
                }),
                Some(("before", i)) => f.before = Some(i.to_string()),
                Some(("since", i)) => f.since = Some(i.to_string()),
                _ => {
                    return Err(Error::Usage(format!(
                        "unsupported filter {s:?}: use dangling=true|false, reference=PATTERN, \
                         label=KEY[=VALUE], before=IMAGE or since=IMAGE"
                    )));
                }
            }
        }
        Ok(f)
    }

    /// Does the reference filter keep an image shown under `name`? A pattern with a `:` is
    /// matched against `repo:tag`, else against the repository (docker's rule).
    fn keeps(&self, name: Option<&Reference>) -> bool {
        if self.references.is_empty() {
            return true;
        }
        let Some(n) = name else { return false };
        let (repo, full) = (n.familiar_name(), n.familiar());
        self.references
            .iter()
            .any(|p| glob(p, if p.contains(':') { &full } else { &repo }))
    }
}

/// The label and creation-time part of a filter, with `before`/`since` resolved to times.
struct ConfigFilter<'a> {
    labels: &'a [(String, Option<String>)],
    before: Option<jiff::Timestamp>,
    since: Option<jiff::Timestamp>,
}

impl ConfigFilter<'_> {
    fn keeps(&self, config: &ImageConfig) -> bool {
        let labels = config
            .config
            .as_ref()
            .and_then(|c| c.get("Labels"))
            .and_then(|l| l.as_object());
        let label_ok = self.labels.iter().all(|(k, v)| {
            labels
                .and_then(|l| l.get(k))
                .is_some_and(|have| v.as_ref().is_none_or(|v| have.as_str() == Some(v)))
        });
        let t = config
            .created
            .as_deref()
            .and_then(|c| c.parse::<jiff::Timestamp>().ok());
        let within = |bound: Option<jiff::Timestamp>, want: std::cmp::Ordering| match bound {
            None => true,
            Some(b) => t.is_some_and(|t| t.cmp(&b) == want),
        };
        label_ok
            && within(self.before, std::cmp::Ordering::Less)
            && within(self.since, std::cmp::Ordering::Greater)
    }
}

/// A row of `images`: one per name, or one unnamed row for an image without names.
#[derive(Debug, Clone)]
pub struct ImageRow {
    pub img: ImageRecord,
    pub name: Option<Reference>,
    pub config: ImageConfig,
}

impl ImageRow {
    /// The repository digest recorded for this row's name (`sha256:…`), if any.
    pub fn repo_digest(&self) -> Option<String> {
        let n = self.name.as_ref()?;
        let prefix = format!("{}@", n.name());
        self.img
            .repo_digests
            .iter()
            .find(|d| d.starts_with(&prefix))
            .and_then(|d| d.split_once('@').map(|(_, d)| d.to_string()))
    }
}

/// One line of an image's history, newest first, with the size of the layer it made.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    pub history: History,
    pub size: u64,
}

/// What `df` shows: images, layers, and how much is shared or reclaimable.
#[derive(Debug, Clone)]
pub struct DiskUsage {
    pub images: Vec<ImageRecord>,
    /// Images a container uses.
    pub in_use: BTreeSet<Digest>,
    pub containers: usize,
    /// Uncompressed size of every stored layer, by chain ID.
    pub layer_sizes: BTreeMap<Digest, u64>,
    /// The images using each layer.
    pub layer_users: BTreeMap<Digest, Vec<Digest>>,
    /// Sum of all layers.
    pub total: u64,
    /// Bytes in layers more than one image uses.
    pub shared: u64,
    /// Bytes no container's image needs.
    pub reclaimable: u64,
}

impl DiskUsage {
    /// Bytes of `img` that it shares with other images.
    pub fn shared_by(&self, img: &ImageRecord) -> u64 {
        img.layers
            .iter()
            .filter(|l| self.layer_users.get(*l).is_some_and(|u| u.len() > 1))
            .filter_map(|l| self.layer_sizes.get(l))
            .sum()
    }
}

impl Store {
    /// When image `name` was created (for `before=`/`since=`).
    fn created_time(&self, name: &str) -> Result<jiff::Timestamp> {
        let img = self.resolve(name)?;
        let c = ImageConfig::parse(&self.read_blob(&img.id)?, img.id.as_str())?;
        c.created.and_then(|t| t.parse().ok()).ok_or_else(|| {
            Error::Usage(format!("image {name} has no creation time to compare with"))
        })
    }

    /// The rows of `images`, newest first, then by name.
    pub fn image_rows(&self, filter: &ImageFilter) -> Result<Vec<ImageRow>> {
        let by_config = ConfigFilter {
            labels: &filter.labels,
            before: filter
                .before
                .as_deref()
                .map(|i| self.created_time(i))
                .transpose()?,
            since: filter
                .since
                .as_deref()
                .map(|i| self.created_time(i))
                .transpose()?,
        };
        let mut by_id: BTreeMap<Digest, Vec<Reference>> = BTreeMap::new();
        // Damage is named in warnings and the rest listed (see `health`).
        for (name, id) in self.refs_for_listing()? {
            match Reference::parse(&name) {
                Ok(r) => by_id.entry(id).or_default().push(r),
                Err(e) => log::warn!("refs.json: skipping name {name:?}: {e}"),
            }
        }
        let mut rows = Vec::new();
        for img in self.images()? {
            let names = by_id.remove(&img.id).unwrap_or_default();
            if filter.dangling.is_some_and(|d| d != names.is_empty()) {
                continue;
            }
            let config = match self
                .read_blob(&img.id)
                .and_then(|b| ImageConfig::parse(&b, img.id.as_str()))
            {
                Ok(c) => c,
                Err(e) => {
                    log::warn!(
                        "image {}: {e}; {}",
                        img.id.short(),
                        super::health::FSCK_HINT
                    );
                    continue;
                }
            };
            if !by_config.keeps(&config) {
                continue;
            }
            let mut shown: Vec<Option<Reference>> = names.into_iter().map(Some).collect();
            if shown.is_empty() {
                shown.push(None);
            }
            for name in shown.into_iter().filter(|n| filter.keeps(n.as_ref())) {
                rows.push(ImageRow {
                    img: img.clone(),
                    name,
                    config: config.clone(),
                });
            }
        }
        rows.sort_by(|a, b| {
            b.config
                .created
                .cmp(&a.config.created)
                .then(a.name.cmp(&b.name))
        });
        Ok(rows)
    }

    /// An image's history, newest first; an image without history gets one row per layer.
    pub fn history(&self, img: &ImageRecord) -> Result<Vec<HistoryRow>> {
        let config = ImageConfig::parse(&self.read_blob(&img.id)?, img.id.as_str())?;
        let sizes: Vec<u64> = img
            .layers
            .iter()
            .map(|c| self.layer_meta(c).map(|m| m.size))
            .collect::<Result<_>>()?;
        let mut hist = config.history;
        if hist.is_empty() {
            hist = vec![History::default(); sizes.len()];
        }
        let mut layer = 0;
        let mut rows = Vec::new();
        for history in hist {
            let size = if history.empty_layer {
                0
            } else {
                layer += 1;
                sizes.get(layer - 1).copied().unwrap_or(0)
            };
            rows.push(HistoryRow { history, size });
        }
        rows.reverse();
        Ok(rows)
    }

    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let images = self.images()?;
        let in_use = self.images_in_use()?;
        let mut layer_users: BTreeMap<Digest, Vec<Digest>> = BTreeMap::new();
        for img in &images {
            for l in img.layers.iter().collect::<BTreeSet<_>>() {
                layer_users
                    .entry(l.clone())
                    .or_default()
                    .push(img.id.clone());
            }
        }
        let mut layer_sizes = BTreeMap::new();
        for l in self.layer_ids()? {
            let size = self.layer_meta(&l)?.size;
            layer_sizes.insert(l, size);
        }
        let total: u64 = layer_sizes.values().sum();
        let active: BTreeSet<&Digest> = images
            .iter()
            .filter(|i| in_use.contains(&i.id))
            .flat_map(|i| i.layers.iter())
            .collect();
        let active_size: u64 = active.iter().filter_map(|l| layer_sizes.get(*l)).sum();
        let shared = layer_users
            .iter()
            .filter(|(_, u)| u.len() > 1)
            .filter_map(|(l, _)| layer_sizes.get(l))
            .sum();
        Ok(DiskUsage {
            containers: self.container_count(),
            reclaimable: total - active_size,
            images,
            in_use,
            layer_sizes,
            layer_users,
            total,
            shared,
        })
    }

    /// `rmi`: untags each image by the name given (every name with `force`, or when it has
    /// only one) and deletes the images left without names and containers. Progress lines
    /// (`Untagged: …`, `Deleted: …`) go to `out`. Needs the store lock held exclusively.
    pub fn remove_images(&self, names: &[String], force: bool, out: &mut dyn Write) -> Result<()> {
        let in_use = self.images_in_use()?;
        let mut delete = Vec::new();
        for name in names {
            let img = self.resolve(name)?;
            let names = self.names_of(&img.id)?;
            let by_name = Reference::parse(name)
                .ok()
                .map(|r| r.to_string())
                .filter(|n| names.contains(n));
            let untag: Vec<String> = match by_name {
                Some(n) => vec![n],
                None if names.len() > 1 && !force => {
                    return Err(Error::Usage(format!(
                        "image {} is referenced by {} names ({}): remove them by name or use -f",
                        img.id.short(),
                        names.len(),
                        names.join(", ")
                    )));
                }
                None => names.clone(),
            };
            let left = names.len() - untag.len();
            if left == 0 && in_use.contains(&img.id) && !force {
                return Err(Error::Usage(format!(
                    "image {} is used by a container: remove the container first or use -f \
                     (untags only)",
                    img.id.short()
                )));
            }
            self.update_refs(|refs| {
                for n in &untag {
                    refs.remove(n);
                }
                Ok(())
            })?;
            for n in &untag {
                let shown = Reference::parse(n).map_or(n.clone(), |r| r.familiar());
                let _ = writeln!(out, "Untagged: {shown}");
            }
            if left == 0 && !in_use.contains(&img.id) {
                delete.push(img.id);
            }
        }
        self.delete_images(&delete, out)?;
        Ok(())
    }

    /// `prune`: deletes dangling images (with `all`, every image no container uses); returns
    /// the bytes reclaimed. Needs the store lock held exclusively.
    pub fn prune(&self, all: bool, out: &mut dyn Write) -> Result<u64> {
        let in_use = self.images_in_use()?;
        let candidates = if all {
            self.images()?
        } else {
            self.dangling()?
        };
        let ids: Vec<Digest> = candidates
            .into_iter()
            .filter(|i| !in_use.contains(&i.id))
            .map(|i| i.id)
            .collect();
        self.update_refs(|refs| {
            refs.retain(|_, id| !ids.contains(id));
            Ok(())
        })?;
        self.delete_images(&ids, out)
    }
}

/// Shell-style glob with `*` and `?`, neither matching `/` (docker's reference filter uses
/// path matching).
pub fn glob(pattern: &str, s: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && ((p[pi] == '?' && t[ti] != '/') || p[pi] == t[ti]) && p[pi] != '*' {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(sp) = star.filter(|_| t[mark] != '/') {
            pi = sp + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("alpine", "alpine"));
        assert!(glob("alp*", "alpine"));
        assert!(glob("*/app:1*", "user/app:1.2"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("alpine", "alpine2"));
        assert!(!glob("*x", "abc"));
        assert!(!glob("*app", "user/app"));
        assert!(glob("*/app", "user/app"));
    }

    #[test]
    fn filters() {
        let f = ImageFilter::parse(&["dangling=true".into(), "reference=*/app".into()]).unwrap();
        assert_eq!(f.dangling, Some(true));
        let app = Reference::parse("user/app:1").unwrap();
        let other = Reference::parse("alpine").unwrap();
        assert!(f.keeps(Some(&app)) && !f.keeps(Some(&other)) && !f.keeps(None));
        assert!(ImageFilter::default().keeps(None));
        assert!(ImageFilter::parse(&["until=x".into()]).is_err());
        let f =
            ImageFilter::parse(&["label=a=b".into(), "label=c".into(), "since=x".into()]).unwrap();
        assert_eq!(
            f.labels,
            [("a".into(), Some("b".into())), ("c".into(), None)]
        );
        assert_eq!(f.since.as_deref(), Some("x"));
    }
}
