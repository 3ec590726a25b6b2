"""Retrieval-augmented transfer sets: embed a large image pool, index it, and curate the images that look
like the task's labeled ones, keeping near-copies of the test and validation images out.

Modules: `pool` (read folder / CSV / tar-shard pools), `demo_pool` (build a mixed offline demo pool),
`embed` (resumable sharded embeddings), `index` (FAISS indexes chosen by size), `curate` (selection
strategies, near-duplicate removal and the leakage guard). FAISS is optional: `pip install taskdistill[retrieval]`.
"""
