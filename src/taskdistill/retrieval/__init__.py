"""Retrieval-augmented transfer sets: embed a large image pool, index it, and curate the images that look
like the task's labeled ones, keeping near-copies of the test and validation images out.

Modules: `pool` (read folder / CSV / tar-shard pools), `demo_pool` (build a mixed offline demo pool),
`embed` (resumable sharded embeddings), `index` (FAISS indexes chosen by size), `curate` (selection
strategies, near-duplicate removal and the leakage guard), `picking` (their torch-free core), `dedup`
(near-duplicates and the guard in O(picks x k)), `transfer_set` (embedding folder -> manifest).
Web scale: `clip_layout` (clip-retrieval folders, memory-mapped), `ondisk_index` (streamed IVF-PQ with on-disk
inverted lists), `web_curate` + `web_transfer_set` (curation over them), `fetch` (picked images out of
webdataset shards), `synthetic_pool` (a planted pool for tests and benchmarks), `blas` (one BLAS thread for
small products). FAISS, pyarrow and webdataset are optional: `pip install taskdistill[retrieval]`.
"""
