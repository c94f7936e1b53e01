"""Backup and redundancy: verified replicas, encrypted off-site copies, restore, retention, RAID health.

* :mod:`.config`   backup targets and policy (``<node>/backup/targets.json``)
* :mod:`.manifest` snapshot manifests and the on-target layout
* :mod:`.dump`     consistent catalogue snapshots (SQLite online backup API, ``pg_dump``)
* :mod:`.replica`  exact replica to a mounted drive: copy missing objects, then the manifest, last
* :mod:`.restic`   encrypted, deduplicated off-site copies through the ``restic`` command
* :mod:`.verify`, :mod:`.restore`, :mod:`.prune`, :mod:`.schedule`, :mod:`.raid`, :mod:`.health`
"""
