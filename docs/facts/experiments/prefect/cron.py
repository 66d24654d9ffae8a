import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo
from prefect.server.schemas.schedules import CronSchedule as ServerCron
from prefect.client.schemas.schedules import CronSchedule as ClientCron
from prefect.schedules import Cron
tz = ZoneInfo("Europe/Berlin")
s = ServerCron(cron="30 2 * * *", timezone="Europe/Berlin")
for a, b in [((2024,3,30),(2024,4,1,3)), ((2024,10,26),(2024,10,28,3))]:
    ds = asyncio.run(s.get_dates(start=datetime(*a, tzinfo=tz), end=datetime(*b, tzinfo=tz)))
    print([ (d.isoformat(), d.astimezone(ZoneInfo("UTC")).isoformat()) for d in ds])
print("client CronSchedule has get_dates:", hasattr(ClientCron, "get_dates"))
print("Cron() ->", type(Cron("30 2 * * *", timezone="Europe/Berlin")).__name__, Cron("30 2 * * *", timezone="Europe/Berlin"))
for c in ["0 0 9 ? * 2-6", "*/5 * * * * *"]:
    try: print(c, ClientCron(cron=c))
    except Exception as e: print(repr(c), "RAISES", type(e).__name__, str(e).splitlines()[0:3])
from prefect.client.schemas.actions import ArtifactCreate
for k in ["report-md", "Report", "my_key", "a.b", ""]:
    try: ArtifactCreate(key=k, type="markdown", data="x"); print(repr(k), "ok")
    except Exception as e: print(repr(k), "RAISES", str(e).splitlines()[1:3])
