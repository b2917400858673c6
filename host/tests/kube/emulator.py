"""A Kubernetes API emulator for Legion's API-contract tests.

kmock 0.8's KubernetesEmulator keeps objects in memory and serves lists and
watch streams over HTTP. This subclass adds what a kube-rs client relies on
and vanilla kmock lacks (../../../../shared/notes/kube-emulator.md):
resourceVersion, uid and creationTimestamp on objects and events; standard
error reasons (NotFound, AlreadyExists); equality label and field selectors
on lists and watches; a `List` kind; the core group's discovery version;
namespaces that must exist before namespaced objects are created in them
(and that a client can GET); server-side apply creating objects; Legion's
custom resources (legion-platform.org/v1alpha1) with a status subresource.

Nothing runs here: the test plays the Job controller and the kubelet by
creating pods and patching statuses through the same HTTP API, and serves
pod logs as canned reactions.

Usage: python emulator.py PORT NAMESPACE...
"""

import asyncio
import itertools
import sys
import time
import uuid

import aiohttp.web
import attrs
import kmock

RV = itertools.count(1)
REASONS = {404: "NotFound", 409: "AlreadyExists"}


def stamp(**kw):
    return dict(kw, uid=str(uuid.uuid4()), creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def selected(req, obj):
    """Equality-only labelSelector and fieldSelector (metadata.name, metadata.namespace)."""
    md = obj.get("metadata", {})
    have = {**(md.get("labels") or {}), **{f"metadata.{k}": v for k, v in md.items() if isinstance(v, str)}}
    for param in ("labelSelector", "fieldSelector"):
        for term in filter(None, req.params.get(param, "").split(",")):
            key, _, value = term.partition("=")
            if have.get(key) != value.lstrip("="):
                return False
    return True


# Namespaces that exist (from the command line); empty accepts any.
NAMESPACES: set = set()


class Emulator(kmock.KubernetesEmulator):
    async def _handle(self, req):
        # GET /api/v1/namespaces/NAME: kmock reads the path as a namespace
        # scope with no resource; answer with the Namespace, if it exists.
        if req.namespace and req.resource and req.resource.plural is None and req.method == kmock.method.GET:
            if NAMESPACES and req.namespace not in NAMESPACES:
                raise kmock.KubernetesError(status=404, message=f'namespaces "{req.namespace}" not found')
            return aiohttp.web.json_response({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": stamp(name=req.namespace, resourceVersion="1"),
                "status": {"phase": "Active"}})
        data = req.data
        if req.resource and req.action == kmock.action.CREATE and isinstance(data, dict):
            md = data.setdefault("metadata", {})
            ns = req.namespace or md.get("namespace")
            if ns and NAMESPACES and ns not in NAMESPACES:
                raise kmock.KubernetesError(status=404, message=f'namespaces "{ns}" not found')
            md.update(stamp(resourceVersion=str(next(RV)), generation=1))
            if req.namespace:
                md.setdefault("namespace", req.namespace)
        elif req.resource and req.action == kmock.action.UPDATE:
            key = (req.resource, req.namespace, req.name)
            if ("apply-patch" in req.headers.get("Content-Type", "") and not req.subresource
                    and (key not in self.objects or self.objects[key].deleted)):
                # Server-side apply creates what does not exist.
                self.objects[key] = {"metadata": stamp(name=req.name, namespace=req.namespace, generation=1)}
            if isinstance(data, dict):
                data.setdefault("metadata", {})["resourceVersion"] = str(next(RV))
            elif isinstance(data, list):
                # JSON patch: the apiserver's `test` treats an absent path as null.
                data[:] = [op for op in data if not (op.get("op") == "test" and op.get("value") is None)]
                data.append({"op": "add", "path": "/metadata/resourceVersion", "value": str(next(RV))})
        return await super()._handle(req)

    async def _render_error(self, e):
        if isinstance(e, kmock.KubernetesError) and e.status in REASONS:
            e = attrs.evolve(e, reason=REASONS[e.status])
        return await super()._render_error(e)

    async def _serve_list(self, req):
        res = await super()._serve_list(req)
        items = [o for o in res["items"] if selected(req, o)]
        return {"apiVersion": "v1", "kind": "List", **res, "metadata": {"resourceVersion": str(next(RV))}, "items": items}

    async def _serve_watch(self, req):
        # kmock snapshots the objects and only then subscribes to the event
        # bus, so a change between the two is lost (a Job deleted right
        # after a watch connects would never be reported). Here the bus
        # position is marked first: a change may be seen twice, never lost.
        yield b""
        bus = self._buses[req.resource]
        mark = await bus.mark()
        try:
            async with self._lock:
                objs = self._KubernetesEmulator__get_objs(req, strict=False)
                events = [{"type": "ADDED", "object": o.raw} for o in objs if not o.deleted]
            for event in events:
                yield event if selected(req, event["object"]) else None
            async for event in bus.stream(since=mark):
                md = event.get("object", {}).get("metadata", {})
                wanted = self._KubernetesEmulator__check(
                    req, req.resource, md.get("namespace"), md.get("name"), strict=False
                )
                yield event if wanted and selected(req, event["object"]) else None
        finally:
            await bus.unmark(mark)

    async def _serve_fetch(self, req):
        # Pod logs: the test writes each container's log into the pod's
        # annotations (`legion.test/log.<container>`), as a kubelet would
        # have it; the body ends when the text does.
        if req.subresource == "log":
            pod = await super()._serve_fetch(attrs.evolve(req, subresource=None))
            container = req.params.get("container", "")
            notes = (pod.get("metadata", {}).get("annotations") or {})
            return notes.get(f"legion.test/log.{container}", "").encode()
        return await super()._serve_fetch(req)

    async def _serve_version(self, req):
        res = await super()._serve_version(req)
        return dict(res, groupVersion=res["groupVersion"].lstrip("/"))


async def main(port, namespaces):
    NAMESPACES.update(namespaces)
    async with Emulator() as k8s, kmock.Server(k8s, host="127.0.0.1", port=port):
        k8s.resources.load_bundled()
        # A POSTed CRD registers nothing in kmock: Legion's kinds are declared.
        for plural, kind in [("toolchains", "Toolchain"), ("modeltrainings", "ModelTraining"),
                             ("modelpackagings", "ModelPackaging"), ("modeldeployments", "ModelDeployment")]:
            k8s.resources[f"legion-platform.org/v1alpha1/{plural}"] = dict(
                kind=kind, namespaced=True, singular=kind.lower(), subresources={"status"},
                verbs="create delete get list patch watch".split())
        k8s[kmock.action.WATCH] << kmock.headers({"Content-Type": "application/json"}) << k8s._serve_watch
        print("ready", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2:]))
