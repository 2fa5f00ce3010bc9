# Input: a pod. $node: the node it is bound to. $info: [node-info.json].
# $now: RFC 3339 time. Output: the status merge-patch a kubelet's report of
# a started pod amounts to; nothing when $node is not a simulated node.

def cond($type): {type: $type, status: "True", lastProbeTime: null, lastTransitionTime: $now};
def image_id: "docker.io/library/" + (.image | split("/") | last) + "@sha256:" + ("0" * 64);
def container_id($uid): "containerd://" + ($uid + .name | @base64 | gsub("[^A-Za-z0-9]"; "") | ascii_downcase);

$info[0][$node] as $node
| select($node != null)
| .metadata.uid as $uid
# A stable pod IP from the uid: 10.244.<node>.<2..251>.
| ([$uid | explode[]] | add % 250 + 2) as $host
| ($node.podNet + "." + ($host | tostring)) as $ip
| {status: {
    phase: "Running",
    hostIP: $node.hostIP,
    podIP: $ip,
    podIPs: [{ip: $ip}],
    startTime: $now,
    conditions: [cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
    initContainerStatuses: [.spec.initContainers[]? | {
      name, image, imageID: image_id, containerID: container_id($uid),
      ready: true, restartCount: 0,
      state: {terminated: {exitCode: 0, reason: "Completed", startedAt: $now, finishedAt: $now,
        containerID: container_id($uid)}},
      lastState: {}}],
    containerStatuses: [.spec.containers[] | {
      name, image, imageID: image_id, containerID: container_id($uid),
      ready: true, started: true, restartCount: 0,
      state: {running: {startedAt: $now}}, lastState: {}}]}}
| if .status.initContainerStatuses == [] then del(.status.initContainerStatuses) else . end
