//! A directory as object storage (`wharf serve`, tests): the key is the relative path. Writes
//! go to a temporary file renamed into place, so a reader never sees half an object.

use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{ObjectError, ObjectInfo, ObjectPage, ObjectStore, check_key};

#[derive(Debug, Clone)]
pub struct LocalObjects {
    root: PathBuf,
}

impl LocalObjects {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalObjects { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of `key` (checked: no `..`, no absolute paths, no empty segments).
    pub fn path_of(&self, key: &str) -> Result<PathBuf, ObjectError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

fn backend(e: impl std::fmt::Display) -> ObjectError {
    ObjectError::Backend(e.to_string())
}

#[async_trait]
impl ObjectStore for LocalObjects {
    async fn put(&self, key: &str, bytes: Vec<u8>, _content_type: Option<&str>) -> Result<(), ObjectError> {
        let path = self.path_of(key)?;
        let parent = path.parent().expect("a key has a file name").to_path_buf();
        let name = path.file_name().expect("a key has a file name").to_string_lossy().to_string();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&parent)?;
            let tmp = parent.join(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()));
            std::fs::write(&tmp, &bytes)?;
            std::fs::rename(&tmp, &path).inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
        })
        .await
        .map_err(backend)?
        .map_err(backend)
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, ObjectError> {
        let path = self.path_of(key)?;
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(ObjectError::NotFound(key.to_string())),
            Err(e) => Err(backend(e)),
        }
    }

    async fn delete(&self, keys: &[String]) -> Result<u64, ObjectError> {
        for key in keys {
            let path = self.path_of(key)?;
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(backend(e)),
            }
        }
        Ok(keys.len() as u64)
    }

    async fn list(&self, prefix: &str, limit: u32, continuation: Option<String>) -> Result<ObjectPage, ObjectError> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        let limit = limit.max(1) as usize;
        tokio::task::spawn_blocking(move || {
            // Walk only the directory the prefix names (`tenants/` → root/tenants).
            let dir_part = match prefix.rfind('/') {
                Some(i) => &prefix[..i],
                None => "",
            };
            let mut keys = Vec::new();
            walk(&root, &root.join(dir_part), &mut keys)?;
            keys.retain(|(k, _)| {
                k.starts_with(&prefix) && continuation.as_ref().is_none_or(|c| k.as_str() > c.as_str())
            });
            keys.sort_by(|a, b| a.0.cmp(&b.0));
            let more = keys.len() > limit;
            keys.truncate(limit);
            let next = if more { keys.last().map(|(k, _)| k.clone()) } else { None };
            Ok(ObjectPage { objects: keys.into_iter().map(|(_, info)| info).collect(), next })
        })
        .await
        .map_err(backend)?
    }
}

/// Every regular file under `dir` (temporary files of unfinished writes excluded).
fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, ObjectInfo)>) -> Result<(), ObjectError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(backend(e)),
    };
    for entry in rd {
        let entry = entry.map_err(backend)?;
        let path = entry.path();
        let meta = entry.metadata().map_err(backend)?;
        if meta.is_dir() {
            walk(root, &path, out)?;
        } else if meta.is_file() && !entry.file_name().to_string_lossy().starts_with('.') {
            let rel = path.strip_prefix(root).map_err(backend)?;
            let key = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            let modified: DateTime<Utc> = meta.modified().map_err(backend)?.into();
            out.push((key.clone(), ObjectInfo { key, size: meta.len(), last_modified: modified }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn puts_gets_lists_in_pages_and_deletes() {
        let dir = std::env::temp_dir().join(format!("wharf-objects-{}", uuid::Uuid::new_v4().simple()));
        let s = LocalObjects::new(&dir);
        for k in ["tenants/a/1", "tenants/a/2", "tenants/b/x/3", "system/payloads/p.json"] {
            s.put(k, k.as_bytes().to_vec(), None).await.unwrap();
        }
        assert_eq!(s.get("tenants/b/x/3").await.unwrap(), b"tenants/b/x/3");
        assert!(matches!(s.get("tenants/a/9").await, Err(ObjectError::NotFound(_))));
        assert!(matches!(s.get("../etc/passwd").await, Err(ObjectError::InvalidKey(..))));

        let p1 = s.list("tenants/", 2, None).await.unwrap();
        let keys: Vec<_> = p1.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["tenants/a/1", "tenants/a/2"]);
        let p2 = s.list("tenants/", 2, p1.next).await.unwrap();
        assert_eq!(p2.objects.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), ["tenants/b/x/3"]);
        assert!(p2.next.is_none());

        s.delete(&["tenants/a/1".into(), "tenants/a/missing".into()]).await.unwrap();
        assert_eq!(s.list("tenants/a/", 10, None).await.unwrap().objects.len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
