#!/usr/bin/env python3
"""Reference facts read through pynvml, for the live NVML test (tests/live_nvml.rs).
Prints one JSON document; errors are recorded as {"error": "..."}."""
import ctypes
import json

import pynvml as N


def tryit(f):
    try:
        return f()
    except Exception as e:  # record the NVML error, the test compares it
        return {"error": f"{type(e).__name__}: {e}"}


def s(v):
    return v.decode() if isinstance(v, bytes) else v


N.nvmlInit()
out = {
    "driver": s(N.nvmlSystemGetDriverVersion()),
    "cuda": N.nvmlSystemGetCudaDriverVersion_v2(),
    "gpus": [],
    "pairs": [],
}
n = N.nvmlDeviceGetCount()
hs = [N.nvmlDeviceGetHandleByIndex(i) for i in range(n)]
for i, h in enumerate(hs):
    g = {
        "index": i,
        "name": s(N.nvmlDeviceGetName(h)),
        "uuid": s(N.nvmlDeviceGetUUID(h)),
        "serial": tryit(lambda: s(N.nvmlDeviceGetSerial(h))),
        "bus_id": s(N.nvmlDeviceGetPciInfo_v3(h).busId),
        "memory_total": N.nvmlDeviceGetMemoryInfo(h).total,
        "cc": list(N.nvmlDeviceGetCudaComputeCapability(h)),
        "numa": tryit(lambda: N.nvmlDeviceGetNumaNodeId(h)),
        "mig": tryit(lambda: list(N.nvmlDeviceGetMigMode(h))),
        "links": [],
    }
    for l in range(18):
        st = tryit(lambda: N.nvmlDeviceGetNvLinkState(h, l))
        if isinstance(st, dict):
            break
        if st == 1:
            g["links"].append({
                "link": l,
                "version": tryit(lambda: N.nvmlDeviceGetNvLinkVersion(h, l)),
                "remote_type": tryit(lambda: N.nvmlDeviceGetNvLinkRemoteDeviceType(h, l)),
            })

    def fab():
        info = N.c_nvmlGpuFabricInfoV_t()
        info.version = getattr(N, "nvmlGpuFabricInfo_v2", ctypes.sizeof(info) | (2 << 24))
        N.nvmlDeviceGetGpuFabricInfoV(h, ctypes.byref(info))
        return {"state": info.state, "status": info.status,
                "cluster_uuid": bytes(info.clusterUuid).hex(), "clique_id": info.cliqueId}
    g["fabric"] = tryit(fab)

    def plat():
        # nvmlPlatformInfo_v2_t, declared here so that a pynvml without it still asks.
        class Info(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint), ("ibGuid", ctypes.c_ubyte * 16),
                        ("chassisSerialNumber", ctypes.c_ubyte * 16), ("slotNumber", ctypes.c_ubyte),
                        ("trayIndex", ctypes.c_ubyte), ("hostId", ctypes.c_ubyte),
                        ("peerType", ctypes.c_ubyte), ("moduleId", ctypes.c_ubyte)]
        info = Info()
        info.version = ctypes.sizeof(info) | (2 << 24)
        fn = N._nvmlGetFunctionPointer("nvmlDeviceGetPlatformInfo")
        N._nvmlCheckReturn(fn(h, ctypes.byref(info)))
        return {"chassis_serial": bytes(info.chassisSerialNumber).hex(),
                "slot_number": info.slotNumber, "tray_index": info.trayIndex,
                "host_id": info.hostId, "module_id": info.moduleId}
    g["platform"] = tryit(plat)
    out["gpus"].append(g)
for a in range(n):
    for b in range(n):
        if a != b:
            out["pairs"].append({
                "a": a, "b": b,
                "p2p_nvlink": tryit(lambda: N.nvmlDeviceGetP2PStatus(hs[a], hs[b], N.NVML_P2P_CAPS_INDEX_NVLINK)),
                "common_ancestor": tryit(lambda: N.nvmlDeviceGetTopologyCommonAncestor(hs[a], hs[b])),
            })
print(json.dumps(out))
