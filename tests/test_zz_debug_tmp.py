import time, sys
import tests.support.servers as S
orig_stop=S.MongoServer.stop; orig_start=S.MongoServer.start; orig_wr=S.MongoServer.wait_ready
def stop(self,*a):
    t=time.monotonic(); orig_stop(self,*a); print("\nstop",self.port, self._proc.returncode, round(time.monotonic()-t,2), file=sys.stderr)
def wr(self,*a):
    t=time.monotonic(); r=orig_wr(self,*a); print("\nwait_ready",self.port,round(time.monotonic()-t,2), file=sys.stderr); return r
S.MongoServer.stop=stop; S.MongoServer.wait_ready=wr
def test_dbg():
    pass
