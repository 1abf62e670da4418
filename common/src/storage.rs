//! Access to the object store that holds backups. A backup location is a plain path,
//! `file://`, `s3://bucket/prefix`, `gs://bucket/prefix` or `az://container/prefix`; all keys
//! of the backup format are relative to that prefix. S3 reads the usual `AWS_*` environment
//! variables and accepts `endpoint`, `region`, `access_key_id`, `secret_access_key` and
//! `allow_http` options; requests are path-style so S3-compatible servers work.

use crate::index_file::{index_key, IndexFile, ManifestVersion};
use crate::local_durable;
use crate::local_range::{read_file_range, RangeBytes};
use crate::manifest::{manifest_key, Manifest};
use crate::manifest_index::{read_index, ManifestIndex, Sieve};
use crate::manifest_split::read_index_of_file;
use crate::read_crc::{read_file_checked, CheckedObject, RunningCrc, MAX_PREALLOCATED};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};
use std::collections::HashMap;
use std::sync::Arc;
use thiserror::Error;
use url::Url;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("invalid storage location {url:?}: {reason}; use a path, file:///dir, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix")]
    BadUrl { url: String, reason: String },
    #[error("backup {backup_id:?} not found in {location}: no {key}; run `kafka-backup list-backups --storage {location}` to see the backups there")]
    BackupNotFound {
        backup_id: String,
        location: String,
        key: String,
    },
    #[error("segment {key} not found in {location}; the backup is incomplete or was partly deleted. Restore a time window or partitions that exclude it, or re-run the backup")]
    SegmentNotFound { key: String, location: String },
    #[error("manifest {key} in {location} does not parse: {reason}; the backup is damaged or was not written by kafka-backup")]
    BadManifest {
        key: String,
        location: String,
        reason: String,
    },
    #[error("backup {backup_id:?} already exists in {location}; choose another --backup-id")]
    BackupExists { backup_id: String, location: String },
    #[error("storage {location} failed on {key}: {source}; check that the store is reachable and the credentials are valid")]
    Io {
        location: String,
        key: String,
        #[source]
        source: object_store::Error,
    },
}

/// The backup ids at a location (see [`BackupStore::list_backup_ids`]).
#[derive(Debug, Default)]
pub struct BackupIds {
    /// Ids with a manifest: backups a restore can read.
    pub complete: Vec<String>,
    /// Objects without a manifest: a backup still running, or one that stopped before it
    /// finished. Restores cannot use them; a finished rerun with that id removes what it does
    /// not write again.
    pub incomplete: Vec<String>,
}

/// A backup location: an object store plus the prefix all backup keys live under.
#[derive(Clone, Debug)]
pub struct BackupStore {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    location: String,
    /// The same store when it is a local directory: whole-object reads go straight to the
    /// file (object_store's local reads took 3-4 ms for a 5 MB manifest, a plain read 1 ms).
    local: Option<Arc<LocalFileSystem>>,
}

/// Retries inside one request cover blips; a longer outage surfaces as an error within about
/// 15 s so the restore's circuit breaker can pause the plan instead of every task hanging in
/// the client for minutes (object_store's default is 10 retries over up to 3 minutes).
fn short_retries() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(15),
        ..Default::default()
    }
}

impl BackupStore {
    /// Opens a location. `create` makes a missing local directory (backup); restores refuse
    /// a missing one so a typo is not mistaken for an empty store.
    pub fn open(
        location: &str,
        options: &HashMap<String, String>,
        create: bool,
    ) -> Result<Self, StorageError> {
        let bad = |reason: String| StorageError::BadUrl {
            url: location.to_string(),
            reason,
        };
        if location.trim().is_empty() {
            return Err(bad("it is empty".into()));
        }
        let is_url = location.contains("://");
        if !is_url || location.starts_with("file://") {
            let path = if is_url {
                Url::parse(location)
                    .map_err(|e| bad(e.to_string()))?
                    .to_file_path()
                    .map_err(|_| bad("not a local file path".into()))?
            } else {
                std::path::PathBuf::from(location)
            };
            if create {
                std::fs::create_dir_all(&path)
                    .map_err(|e| bad(format!("cannot create directory: {e}")))?;
            } else if !path.is_dir() {
                return Err(bad(format!("directory {} does not exist", path.display())));
            }
            let fs =
                Arc::new(LocalFileSystem::new_with_prefix(&path).map_err(|e| bad(e.to_string()))?);
            return Ok(Self {
                store: fs.clone(),
                prefix: ObjectPath::default(),
                location: location.to_string(),
                local: Some(fs),
            });
        }
        let url = Url::parse(location).map_err(|e| bad(e.to_string()))?;
        let prefix = ObjectPath::from(url.path().trim_start_matches('/'));
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "s3" | "s3a" => {
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(url.host_str().unwrap_or_default())
                    .with_virtual_hosted_style_request(false)
                    .with_retry(short_retries());
                for (k, v) in options {
                    let key = k
                        .parse()
                        .map_err(|_| bad(format!("unknown S3 option {k:?}")))?;
                    b = b.with_config(key, v);
                }
                let endpoint_is_http = options
                    .get("endpoint")
                    .cloned()
                    .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
                    .or_else(|| std::env::var("AWS_ENDPOINT").ok())
                    .is_some_and(|e| e.starts_with("http://"));
                if endpoint_is_http {
                    b = b.with_allow_http(true);
                }
                Arc::new(b.build().map_err(|e| bad(e.to_string()))?)
            }
            "gs" | "az" | "azure" | "abfs" | "abfss" => {
                let (s, _) = object_store::parse_url_opts(&url, options.iter())
                    .map_err(|e| bad(e.to_string()))?;
                Arc::from(s)
            }
            other => return Err(bad(format!("unsupported scheme {other:?}"))),
        };
        Ok(Self {
            store,
            prefix,
            location: location.to_string(),
            local: None,
        })
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    fn path(&self, key: &str) -> ObjectPath {
        let mut p = self.prefix.clone();
        for part in key.split('/').filter(|s| !s.is_empty()) {
            p = p.child(part);
        }
        p
    }

    fn not_found(&self, key: &str) -> StorageError {
        StorageError::SegmentNotFound {
            key: key.to_string(),
            location: self.location.clone(),
        }
    }

    fn io(&self, key: &str, source: object_store::Error) -> StorageError {
        StorageError::Io {
            location: self.location.clone(),
            key: key.to_string(),
            source,
        }
    }

    /// Reads a segment object; a missing one is `SegmentNotFound`.
    pub async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        if let Some(fs) = &self.local {
            return self
                .on_local_path(fs, key, |file| std::fs::read(file).map(Bytes::from))
                .await;
        }
        let res = self.remote_get(key).await?;
        res.bytes().await.map_err(|e| self.io(key, e))
    }

    /// Starts reading an object from the object store; a missing one is `SegmentNotFound`.
    async fn remote_get(&self, key: &str) -> Result<object_store::GetResult, StorageError> {
        match self.store.get(&self.path(key)).await {
            Ok(r) => Ok(r),
            Err(object_store::Error::NotFound { .. }) => Err(self.not_found(key)),
            Err(e) => Err(self.io(key, e)),
        }
    }

    /// Reads a whole segment object and its CRC, hashed chunk by chunk as it arrives (see
    /// `read_crc.rs`); a missing one is `SegmentNotFound`.
    pub async fn get_checked(&self, key: &str) -> Result<CheckedObject, StorageError> {
        if let Some(fs) = &self.local {
            return self
                .on_local_path(fs, key, |file| read_file_checked(&file))
                .await;
        }
        let res = self.remote_get(key).await?;
        let len = usize::try_from(res.meta.size).unwrap_or(usize::MAX);
        let mut crc = RunningCrc::new(len);
        let mut buf = crate::decompress::take_buffer_with(len.min(MAX_PREALLOCATED));
        let mut stream = res.into_stream();
        while let Some(chunk) = stream.try_next().await.map_err(|e| self.io(key, e))? {
            buf.extend_from_slice(&chunk);
            crc.update(&buf);
        }
        Ok(crc.finish(Bytes::from(buf)))
    }

    fn local_error(&self, key: &str, e: std::io::Error) -> StorageError {
        if e.kind() == std::io::ErrorKind::NotFound {
            return self.not_found(key);
        }
        self.io(
            key,
            object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            },
        )
    }

    /// Runs `work` on the file-system path of a local key, off the async threads; its I/O
    /// errors name the key (a missing file is `SegmentNotFound`).
    async fn on_local_path<T: Send + 'static>(
        &self,
        fs: &LocalFileSystem,
        key: &str,
        work: impl FnOnce(std::path::PathBuf) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        let path = fs
            .path_to_filesystem(&self.path(key))
            .map_err(|e| self.io(key, e))?;
        tokio::task::spawn_blocking(move || work(path))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            .map_err(|e| self.local_error(key, e))
    }

    /// Reads a byte range of an object (the frames a seek index points at); a local one is
    /// mapped where it can be (see `local_range.rs`).
    pub async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<RangeBytes, StorageError> {
        if let Some(fs) = &self.local {
            return self
                .on_local_path(fs, key, move |file| read_file_range(&file, range))
                .await;
        }
        match self.store.get_range(&self.path(key), range).await {
            Ok(b) => Ok(b.into()),
            Err(object_store::Error::NotFound { .. }) => Err(self.not_found(key)),
            Err(e) => Err(self.io(key, e)),
        }
    }

    /// Writes an object; object stores make a single put atomic (local: temp file + rename).
    pub async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), StorageError> {
        self.put_parts(key, [Bytes::from(data)]).await
    }

    /// Writes one object made of `parts` in order, without joining them first (a large
    /// part is written as it is, not copied next to the small ones). A local object's data
    /// is on disk when this returns (see `local_durable.rs`).
    pub async fn put_parts(
        &self,
        key: &str,
        parts: impl IntoIterator<Item = Bytes>,
    ) -> Result<(), StorageError> {
        self.store
            .put(&self.path(key), parts.into_iter().collect::<PutPayload>())
            .await
            .map_err(|e| self.io(key, e))?;
        self.sync_local(key, |path| local_durable::sync_file(&path))
            .await
    }

    /// Runs `sync` on the file-system path of a local key (a file, or a backup's directory),
    /// off the async threads; nothing for an object store, whose put is durable when it
    /// returns.
    async fn sync_local(
        &self,
        key: &str,
        sync: impl FnOnce(std::path::PathBuf) -> std::io::Result<()> + Send + 'static,
    ) -> Result<(), StorageError> {
        match &self.local {
            Some(fs) => self.on_local_path(fs, key, sync).await,
            None => Ok(()),
        }
    }

    pub async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        match self.store.head(&self.path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.io(key, e)),
        }
    }

    pub async fn read_manifest(&self, backup_id: &str) -> Result<Manifest, StorageError> {
        let key = manifest_key(backup_id);
        let bytes = match self.get(&key).await {
            Err(StorageError::SegmentNotFound { .. }) => {
                return Err(StorageError::BackupNotFound {
                    backup_id: backup_id.to_string(),
                    location: self.location.clone(),
                    key,
                })
            }
            other => other?,
        };
        serde_json::from_slice(&bytes).map_err(|e| StorageError::BadManifest {
            key,
            location: self.location.clone(),
            reason: e.to_string(),
        })
    }

    /// Reads the part of a manifest a restore plans with, as a stream (see
    /// `manifest_index.rs`): memory grows with the segments `sieve` keeps, not with the size
    /// of the manifest's text.
    pub async fn read_manifest_index(
        &self,
        backup_id: &str,
        sieve: Sieve,
    ) -> Result<ManifestIndex, StorageError> {
        if let Some(index) = self.index_from_file(backup_id, &sieve).await {
            return Ok(index);
        }
        let key = manifest_key(backup_id);
        let not_found = || StorageError::BackupNotFound {
            backup_id: backup_id.to_string(),
            location: self.location.clone(),
            key: key.clone(),
        };
        let bad = |reason: String| StorageError::BadManifest {
            key: key.clone(),
            location: self.location.clone(),
            reason,
        };
        let parsed = if let Some(fs) = &self.local {
            let file = fs
                .path_to_filesystem(&self.path(&key))
                .map_err(|e| self.io(&key, e))?;
            let f = match std::fs::File::open(&file) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
                Err(e) => return Err(self.io(&key, local_error(e))),
            };
            tokio::task::spawn_blocking(move || read_index_of_file(&f, &sieve))
                .await
                .map_err(|e| bad(format!("the manifest reader failed: {e}")))?
        } else {
            let res = match self.store.get(&self.path(&key)).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => return Err(not_found()),
                Err(e) => return Err(self.io(&key, e)),
            };
            // The body streams into the parser on a blocking thread through a small channel,
            // so at most a few chunks of it are in memory at once.
            let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
            let parser =
                tokio::task::spawn_blocking(move || read_index(ChannelReader::new(rx), &sieve));
            let mut body = res.into_stream();
            while let Some(chunk) = body.try_next().await.transpose() {
                let chunk = chunk.map_err(std::io::Error::other);
                let failed = chunk.is_err();
                // The parser may stop early (a syntax error); then nobody receives.
                if tx.send(chunk).await.is_err() || failed {
                    break;
                }
            }
            drop(tx);
            parser
                .await
                .map_err(|e| bad(format!("the manifest reader failed: {e}")))?
        };
        parsed.map_err(|e| match e {
            crate::json_pull::PullError::Io { source, .. } => self.io(&key, local_error(source)),
            syntax => bad(syntax.to_string()),
        })
    }

    /// The manifest's facts from the backup's index file (see `index_file.rs`), when it has
    /// one made from exactly its current manifest.json. `None` sends the caller to the
    /// manifest itself, which reports whatever is wrong with the backup.
    async fn index_from_file(&self, backup_id: &str, sieve: &Sieve) -> Option<ManifestIndex> {
        let key = index_key(backup_id);
        let (bytes, stored) = tokio::join!(self.get(&key), self.stored_manifest(backup_id));
        let bytes = match bytes {
            Ok(b) => b,
            Err(StorageError::SegmentNotFound { .. }) => return None,
            Err(e) => {
                tracing::debug!(backup_id, "index file not read ({e}); reading the manifest");
                return None;
            }
        };
        // The object store vouches for the manifest the index was made from: it need not be
        // downloaded to be checksummed.
        let vouched =
            stored.filter(|s| crate::index_file::recorded_version(&bytes).as_ref() == Some(s));
        let sieve = *sieve;
        let decoding =
            tokio::task::spawn_blocking(move || crate::index_file::decode(&bytes, &sieve));
        let decoded = match vouched {
            // The version was read from these same bytes: only damage can make it differ
            // from the checked file's, and then the manifest is read.
            Some(stored) => decoding
                .await
                .ok()?
                .and_then(|d| d.for_stored_manifest(&stored)),
            None => {
                // Decoded while the manifest's fingerprint is read: neither needs the other.
                let (decoded, fingerprint) =
                    tokio::join!(decoding, self.manifest_fingerprint(backup_id));
                // A manifest that cannot be read is reported by the manifest reader.
                let fingerprint = fingerprint.ok()?;
                decoded.ok()?.and_then(|d| d.for_manifest(fingerprint))
            }
        };
        match decoded {
            Ok(index) => {
                tracing::debug!(backup_id, "planning from {key}");
                Some(index)
            }
            Err(why) => {
                tracing::warn!(
                    backup_id,
                    "{key} not used ({why}); planning from the manifest"
                );
                None
            }
        }
    }

    /// The manifest's length and entity tag as its object store reports them; `None` for a
    /// local backup (see `index_file.rs`), a store that reports no tag, or no manifest.
    async fn stored_manifest(&self, backup_id: &str) -> Option<ManifestVersion> {
        if self.local.is_some() {
            return None;
        }
        let meta = self
            .store
            .head(&self.path(&manifest_key(backup_id)))
            .await
            .ok()?;
        Some(ManifestVersion {
            len: meta.size,
            etag: meta.e_tag.filter(|t| !t.is_empty())?,
        })
    }

    /// The length and CRC32 of a backup's manifest.json, read chunk by chunk (at a million
    /// segments it is ~300 MB; nothing of it is kept).
    async fn manifest_fingerprint(&self, backup_id: &str) -> Result<(u64, u32), StorageError> {
        let key = manifest_key(backup_id);
        if let Some(fs) = &self.local {
            return self
                .on_local_path(fs, &key, |path| crate::read_crc::file_len_and_crc(&path))
                .await;
        }
        let res = self.remote_get(&key).await?;
        let (mut crc, mut len) = (crc32fast::Hasher::new(), 0u64);
        let mut body = res.into_stream();
        while let Some(chunk) = body.try_next().await.map_err(|e| self.io(&key, e))? {
            crc.update(&chunk);
            len += chunk.len() as u64;
        }
        Ok((len, crc.finalize()))
    }

    /// Writes the manifest last in a backup: its presence is what makes a backup complete.
    /// Compact JSON: at a million segments the indented form is 60% larger (~520 against
    /// ~325 bytes a segment) and every restore reads all of it; `show-manifest` prints it
    /// indented for people.
    pub async fn write_manifest(&self, manifest: &Manifest) -> Result<(), StorageError> {
        let key = manifest_key(&manifest.backup_id);
        let json = serde_json::to_vec(manifest).map_err(|e| StorageError::BadManifest {
            key: key.clone(),
            location: self.location.clone(),
            reason: e.to_string(),
        })?;
        // The index file first: whenever a manifest exists, so does the index made from it
        // (a reader checks that it was; see `index_file.rs`).
        let mut index = IndexFile::of(manifest, &json);
        self.put(&index_key(&manifest.backup_id), index.bytes(None))
            .await?;
        // Everything the manifest names on disk before it is written (each object's data
        // was synced as it was written): the backup's directories. A backup of nothing has
        // none yet: the manifest's put makes it.
        self.sync_local(&manifest.backup_id, |dir| {
            if dir.is_dir() {
                local_durable::sync_dirs_under(&dir)?;
            }
            Ok(())
        })
        .await?;
        let json = Bytes::from(json);
        self.put_parts(&key, [json.clone()]).await?;
        // The manifest's own rename, then the backup's entry in the directory above (until
        // it is on disk, neither the backup nor its manifest can be found, so it may come
        // last).
        self.sync_local(&manifest.backup_id, |dir| {
            local_durable::sync_dir(&dir)?;
            dir.parent().map_or(Ok(()), local_durable::sync_dir)
        })
        .await?;
        // On an object store, the index again with the entity tag the store gave the
        // manifest, so that a restore can trust it without downloading the manifest. The
        // backup is complete without it: a failure only leaves the index that restores check
        // by the manifest's checksum.
        if self.local.is_none() {
            if let Err(e) = self.write_index(&manifest.backup_id, &mut index).await {
                tracing::warn!(backup_id = %manifest.backup_id, "could not record the manifest's entity tag in its index file ({e}); restores checksum the manifest instead");
            }
        }
        Ok(())
    }

    /// Writes the index file of backup `backup_id`, whose manifest is already stored,
    /// recording the entity tag its object store reports for it (see `index_file.rs`).
    pub async fn write_index(
        &self,
        backup_id: &str,
        index: &mut IndexFile,
    ) -> Result<(), StorageError> {
        let stored = self.stored_manifest(backup_id).await;
        self.put(&index_key(backup_id), index.bytes(stored.as_ref()))
            .await
    }

    /// Ids of the complete backups (those with a manifest) at this location, sorted.
    pub async fn list_backups(&self) -> Result<Vec<String>, StorageError> {
        Ok(self.list_backup_ids().await?.complete)
    }

    /// Ids at this location, complete (with a manifest) and incomplete (objects but no
    /// manifest: a backup that stopped before it finished), each sorted.
    pub async fn list_backup_ids(&self) -> Result<BackupIds, StorageError> {
        let listing = self
            .store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map_err(|e| self.io("", e))?;
        let mut ids = BackupIds::default();
        for dir in listing.common_prefixes {
            if let Some(id) = dir.filename() {
                if self.exists(&manifest_key(id)).await? {
                    ids.complete.push(id.to_string());
                } else {
                    ids.incomplete.push(id.to_string());
                }
            }
        }
        ids.complete.sort();
        ids.incomplete.sort();
        Ok(ids)
    }

    /// Whether any object exists under `backup_id` (one listing page at most).
    pub async fn has_objects(&self, backup_id: &str) -> Result<bool, StorageError> {
        let base = self.path(backup_id);
        let mut listing = self.store.list(Some(&base));
        match listing.try_next().await {
            Ok(first) => Ok(first.is_some()),
            Err(e) => Err(self.io(backup_id, e)),
        }
    }

    /// Deletes one object; one already gone is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.io(key, e)),
        }
    }

    /// Keys under a backup, for tests and diagnostics.
    pub async fn list_keys(&self, backup_id: &str) -> Result<Vec<String>, StorageError> {
        let mut keys: Vec<String> = self
            .list_objects(backup_id)
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Keys under a backup with the time each object was last written (by the store's
    /// clock), in no particular order.
    pub async fn list_objects(
        &self,
        backup_id: &str,
    ) -> Result<Vec<(String, chrono::DateTime<chrono::Utc>)>, StorageError> {
        let base = self.path(backup_id);
        let metas: Vec<_> = self
            .store
            .list(Some(&base))
            .try_collect()
            .await
            .map_err(|e| self.io(backup_id, e))?;
        let prefix_len = self.prefix.as_ref().len();
        Ok(metas
            .into_iter()
            .map(|m| {
                let s = m.location.as_ref();
                let key = s[prefix_len..].trim_start_matches('/').to_string();
                (key, m.last_modified)
            })
            .collect())
    }
}

fn local_error(e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "manifest reader",
        source: Box::new(e),
    }
}

/// A `Read` over chunks that arrive on a channel (the body of a remote object).
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    fn new(rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    fn manifest(backup_id: &str) -> Manifest {
        Manifest {
            backup_id: backup_id.into(),
            created_at: 1,
            source_cluster_id: None,
            source_brokers: None,
            compression: None,
            topics: Vec::new(),
            consumer_group_offsets: Vec::new(),
        }
    }

    #[test]
    fn a_local_backup_is_complete_with_its_objects_and_its_manifest_written() {
        let root = tempfile::tempdir().expect("tempdir");
        let store = BackupStore::open(root.path().to_str().expect("utf-8"), &HashMap::new(), false)
            .expect("open");
        block_on(async {
            store
                .put("bk/topics/t/0/segment-0.bin", b"data".to_vec())
                .await
                .expect("put");
            store
                .write_manifest(&manifest("bk"))
                .await
                .expect("manifest");
            // A backup of nothing: no directory until the manifest's put makes it.
            store
                .write_manifest(&manifest("empty"))
                .await
                .expect("manifest of an empty backup");
            assert_eq!(store.list_backups().await.expect("list"), ["bk", "empty"]);
            let got = store.get("bk/topics/t/0/segment-0.bin").await.expect("get");
            assert_eq!(&got[..], b"data");
        });
    }

    /// Changes one segment's record count in `m` (as another tool might) and returns the
    /// new manifest's JSON.
    fn edit(m: &mut Manifest) -> Vec<u8> {
        m.topics[0].partitions[0].segments[1].record_count = 9;
        serde_json::to_vec(m).expect("json")
    }

    /// Asserts that backup "b" is planned as the manifest `m` says.
    async fn assert_read_as_json_of(store: &BackupStore, m: &Manifest, sieve: Sieve) {
        let read = store
            .read_manifest_index("b", sieve)
            .await
            .expect("manifest");
        let json = serde_json::to_vec(m).expect("json");
        assert_eq!(read, read_index(json.as_slice(), &sieve).expect("read"));
    }

    #[test]
    fn a_restore_plans_from_the_index_file_only_while_it_matches_the_manifest() {
        let root = tempfile::tempdir().expect("tempdir");
        let store = BackupStore::open(root.path().to_str().expect("utf-8"), &HashMap::new(), false)
            .expect("open");
        let mut m = crate::index_file::tests::sample();
        let sieve = Sieve::window(Some(1_000), Some(2_450));
        block_on(async {
            store.write_manifest(&m).await.expect("manifest");
            // A local manifest is checksummed, never vouched for by an entity tag.
            let index = store.get("b/manifest.index").await.expect("index");
            assert_eq!(crate::index_file::recorded_version(&index), None);
            assert_read_as_json_of(&store, &m, sieve).await;

            // The manifest changed after the backup (by another tool, or by hand): the
            // index file no longer describes it and the manifest is what counts.
            std::fs::write(root.path().join("b/manifest.json"), edit(&mut m)).expect("edit");
            assert_read_as_json_of(&store, &m, sieve).await;

            // A damaged index file is ignored too.
            store.write_manifest(&m).await.expect("manifest");
            let index = root.path().join("b/manifest.index");
            let mut bytes = std::fs::read(&index).expect("index");
            let at = bytes.len() / 2;
            bytes[at] ^= 0x40;
            std::fs::write(&index, bytes).expect("damage");
            assert_read_as_json_of(&store, &m, sieve).await;
        });
    }

    /// A store reached only through the object-store API (as S3 is), here over a directory:
    /// its entity tags are the local file system's (inode, modification time, length).
    fn object_store_over(dir: &std::path::Path) -> BackupStore {
        BackupStore {
            store: Arc::new(LocalFileSystem::new_with_prefix(dir).expect("store")),
            prefix: ObjectPath::default(),
            location: dir.display().to_string(),
            local: None,
        }
    }

    #[test]
    fn an_object_stores_manifest_is_vouched_for_by_its_entity_tag() {
        let root = tempfile::tempdir().expect("tempdir");
        let store = object_store_over(root.path());
        let mut m = crate::index_file::tests::sample();
        let sieve = Sieve::window(None, None);
        let manifest_path = root.path().join("b/manifest.json");
        block_on(async {
            store.write_manifest(&m).await.expect("manifest");
            let index = store.get("b/manifest.index").await.expect("index");
            let recorded = crate::index_file::recorded_version(&index).expect("recorded");
            assert_eq!(Some(recorded), store.stored_manifest("b").await);

            // Planned without reading the manifest: its bytes changed behind the store's back
            // (same file, length and modification time, so the same entity tag) go unseen.
            let mtime = std::fs::metadata(&manifest_path)
                .and_then(|md| md.modified())
                .expect("mtime");
            let hidden = vec![b' '; std::fs::read(&manifest_path).expect("read").len()];
            {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&manifest_path)
                    .expect("open");
                f.write_all(&hidden).expect("overwrite");
                f.set_modified(mtime).expect("mtime");
            }
            assert_read_as_json_of(&store, &m, sieve).await;

            // Written again through the store (a new object, a new tag), the manifest is
            // checksummed, found changed and read as JSON.
            store
                .put("b/manifest.json", edit(&mut m))
                .await
                .expect("edit");
            assert_read_as_json_of(&store, &m, sieve).await;
        });
    }
}
