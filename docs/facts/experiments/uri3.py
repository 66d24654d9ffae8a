import warnings
warnings.simplefilter("always")
from airflow.sdk import Asset
from airflow.sdk.definitions.asset import _get_uri_normalizer
for s in ["file","s3","gs","postgres","http"]:
    print("normalizer", s, _get_uri_normalizer(s))
for u in ["s3://Bucket/Path/","S3://bucket/x?b=2&a=1#frag","file:///tmp/x/","user://a:pw@host/x","airflow://x","x-custom://Foo//","my_table","","   ","Ünïcode://x","postgres://h/db"]:
    try:
        with warnings.catch_warnings(record=True) as w:
            a = Asset(uri=u)
        print(repr(u), "-> name=%r uri=%r group=%r" % (a.name, a.uri, a.group), [str(x.message) for x in w])
    except Exception as e:
        print(repr(u), "RAISES", type(e).__name__, e)
for n in ["self","context"]:
    try: Asset(n); print(n,"ok")
    except Exception as e: print(repr(n), "RAISES", type(e).__name__, e)
print((Asset(uri="s3://a/x") | Asset(uri="s3://a/y")), (Asset(uri="s3://a/x") & Asset(uri="s3://a/y")))
