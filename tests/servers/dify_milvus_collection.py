"""Creates a collection the way Dify's Milvus store does (dify-reference vectors.md §4.3), with
pymilvus 2.6 as Dify pins it, so a test can compare what Upkeep sends with what Dify sends:

    python dify_milvus_collection.py URI NAME DIM [--hybrid] [--analyzer-params JSON]

Fields in Dify's order: `metadata` JSON (max_length 65535, which pymilvus drops), `page_content`
VARCHAR(65535) with `enable_analyzer` = hybrid (+ `analyzer_params`), `id` INT64 primary auto-id,
`vector` FLOAT_VECTOR(dim), and with hybrid `sparse_vector` + the BM25 function `text_bm25_emb`;
index HNSW/IP M=8 efConstruction=64 on `vector`, AUTOINDEX/BM25 on `sparse_vector`; the
collection created with consistency `Session` through `MilvusClient.create_collection`, which
also creates the indexes and loads it.
"""

import argparse

from pymilvus import CollectionSchema, DataType, FieldSchema, Function, FunctionType, MilvusClient
from pymilvus.milvus_client import IndexParams


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("uri")
    ap.add_argument("name")
    ap.add_argument("dim", type=int)
    ap.add_argument("--hybrid", action="store_true")
    ap.add_argument("--analyzer-params")
    a = ap.parse_args()

    content = {"max_length": 65_535, "enable_analyzer": a.hybrid}
    if a.hybrid and a.analyzer_params:
        content["analyzer_params"] = a.analyzer_params
    fields = [
        FieldSchema("metadata", DataType.JSON, max_length=65_535),
        FieldSchema("page_content", DataType.VARCHAR, **content),
        FieldSchema("id", DataType.INT64, is_primary=True, auto_id=True),
        FieldSchema("vector", DataType.FLOAT_VECTOR, dim=a.dim),
    ]
    if a.hybrid:
        fields.append(FieldSchema("sparse_vector", DataType.SPARSE_FLOAT_VECTOR))
    schema = CollectionSchema(fields)
    if a.hybrid:
        schema.add_function(
            Function(
                name="text_bm25_emb",
                input_field_names=["page_content"],
                output_field_names=["sparse_vector"],
                function_type=FunctionType.BM25,
            )
        )
    index_params = IndexParams()
    index_params.add_index(
        field_name="vector", metric_type="IP", index_type="HNSW", params={"M": 8, "efConstruction": 64}
    )
    if a.hybrid:
        index_params.add_index(field_name="sparse_vector", index_type="AUTOINDEX", metric_type="BM25")
    client = MilvusClient(uri=a.uri)
    client.create_collection(
        collection_name=a.name, schema=schema, index_params=index_params, consistency_level="Session"
    )
    client.close()


if __name__ == "__main__":
    main()
