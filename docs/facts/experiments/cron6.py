import pendulum
from airflow.timetables.trigger import CronTriggerTimetable
from airflow.timetables.base import TimeRestriction
for expr in ["0 0 9 ? * 2-6", "0 */5 * * * *"]:
    try:
        tt = CronTriggerTimetable(expr, timezone="UTC"); tt.validate()
        s = pendulum.datetime(2024,1,1,tz="UTC")
        i = tt.next_dagrun_info(last_automated_data_interval=None, restriction=TimeRestriction(s, None, True))
        print(repr(expr), "accepted; description=%r first=%s" % (tt.description, i.run_after))
    except Exception as e:
        print(repr(expr), "RAISES", type(e).__name__, e)
