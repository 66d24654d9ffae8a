import pendulum
from airflow.timetables.base import TimeRestriction
from airflow.timetables.trigger import CronTriggerTimetable
from airflow.timetables.interval import CronDataIntervalTimetable
tz = pendulum.timezone("Europe/Berlin")
def runs(tt, start, end):
    r = TimeRestriction(earliest=start, latest=end, catchup=True)
    info, out = None, []
    while (info := tt.next_dagrun_info(last_automated_data_interval=(info.data_interval if info else None), restriction=r)) is not None:
        di = info.data_interval
        out.append((str(info.logical_date), str(info.run_after), str(di.start) if di else None, str(di.end) if di else None))
    return out
for name, tt in [("CronTriggerTimetable", CronTriggerTimetable("30 2 * * *", timezone=tz)),
                 ("CronDataIntervalTimetable", CronDataIntervalTimetable("30 2 * * *", tz))]:
    for a, b in [((2024,3,30),(2024,4,1)), ((2024,10,26),(2024,10,28))]:
        s = pendulum.datetime(*a, tz=tz); e = pendulum.datetime(*b, 3, tz=tz)
        print(name, s, "..", e)
        for row in runs(tt, s, e): print("   logical=%s run_after=%s interval=[%s, %s)" % row)
