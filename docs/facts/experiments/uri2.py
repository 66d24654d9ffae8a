import warnings
warnings.simplefilter("always")
from airflow.datasets import Dataset, DatasetAny, DatasetAll, _get_uri_normalizer
for s in ["file","s3","postgres"]:
    print("normalizer", s, _get_uri_normalizer(s))
for u in ["s3://Bucket/Path/","S3://bucket/x?b=2&a=1#frag","file:///tmp/x/","user://a:pw@host/x","airflow://x","x-custom://Foo//","my_table","","Ünïcode","postgres://h/db"]:
    try:
        with warnings.catch_warnings(record=True) as w:
            a = Dataset(u)
        print(repr(u), "-> uri=%r" % (a.uri,), [str(x.message) for x in w])
    except Exception as e:
        print(repr(u), "RAISES", type(e).__name__, e)
print(Dataset("s3://a/x") | Dataset("s3://a/y"))
