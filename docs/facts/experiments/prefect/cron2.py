import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo
from prefect.server.schemas.schedules import CronSchedule as ServerCron
tz = ZoneInfo("Europe/Berlin"); U = ZoneInfo("UTC")
s = ServerCron(cron="30 2 * * *", timezone="Europe/Berlin")
for start in [datetime(2024,3,25,tzinfo=tz), datetime(2024,3,31,0,0,tzinfo=tz), datetime(2024,3,31,2,0,tzinfo=U), datetime(2024,10,20,tzinfo=tz), datetime(2024,10,27,1,0,tzinfo=U)]:
    ds = asyncio.run(s.get_dates(start=start, end=datetime(2024,4,2,tzinfo=tz) if start.month==3 else datetime(2024,10,29,tzinfo=tz)))
    print("start", start.isoformat(), "->", [d.astimezone(U).strftime("%m-%d %H:%MZ") for d in ds if d.day in (30,31,1,26,27,28)])
s2 = ServerCron(cron="30 2 * * *", timezone="Europe/Berlin")
print(asyncio.run(s2.get_dates(n=3, start=datetime(2024,3,30,12,tzinfo=tz))))
