"""``vmssctl doctor``: before a first rollout against real Azure, what would stop it, one line each, read-only.

Sign-in and subscription (the credential lists the subscriptions it sees), the scale set (readable, what it is),
the permissions a rollout of the chosen strategy needs on it (Azure's permissions API: asked, not tried), its
health signal, the load balancers in front (their rules, what they say of the VMs, and whether vmssctl may
drain through them), and, given an image, whether Compute lists that version in the set's region. Each line is
good, bad (with what to do) or just said; nothing is written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from vmssctl.errors import ArmError, NotFound, UsageError, VmssctlError
from vmssctl.model import ScaleSet
from vmssctl.policy import BLUE_GREEN, RolloutPolicy
from vmssctl.target import ImageChange

# what a rollout of each strategy does on the set, as RBAC names it ("Virtual Machine Contributor" has them all)
UPGRADE = ("Microsoft.Compute/virtualMachineScaleSets/read", "Microsoft.Compute/virtualMachineScaleSets/write",
           "Microsoft.Compute/virtualMachineScaleSets/manualUpgrade/action",
           "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read")
SURGE = ("Microsoft.Compute/virtualMachineScaleSets/delete/action",)
BLUE_GREEN_GROUP = ("Microsoft.Compute/virtualMachineScaleSets/write",
                    "Microsoft.Compute/virtualMachineScaleSets/delete")
ROLE = "Virtual Machine Contributor on the scale set (or its resource group)"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: said, neither good nor bad
    said: str
    fix: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def run(conn, api, network, policy: RolloutPolicy, change: ImageChange | None) -> list[Check]:
    """Every check, in the order an operator would fix them; stops after the scale set when it cannot be read."""
    from vmssctl.azure import list_subscriptions

    out = []
    where = "the emulator at " + str(conn.endpoint) if conn.is_emulator else "Azure Resource Manager"
    try:
        seen = list_subscriptions(conn)
        mine = next((name for sid, name in seen if sid.lower() == conn.subscription.lower()), None)
        out.append(Check("sign-in", True, f"signed in to {where}; the credential sees {len(seen)} subscription(s)"))
        out.append(Check("subscription", mine is not None, f"{conn.subscription}" + (f" ({mine})" if mine else
                         " is not among them"), "" if mine else "pass --subscription or set AZURE_SUBSCRIPTION_ID "
                         "to one the credential sees, or grant it a role there"))
    except VmssctlError as e:
        return [Check("sign-in", False, f"cannot sign in to {where}: {_short(e)}",
                      "az login (DefaultAzureCredential uses it), or set AZURE_CLIENT_ID, AZURE_TENANT_ID and "
                      "AZURE_CLIENT_SECRET for a service principal, or run where a managed identity is")]
    target = f"{api.resource_group}/{api.name}"
    try:
        ss = api.get()
    except NotFound:
        return [*out, Check("scale set", False, f"{target} is not in subscription {conn.subscription}",
                            "check -g and -n, and the subscription")]
    except VmssctlError as e:
        return [*out, Check("scale set", False, f"cannot read {target}: {_short(e)}", f"grant {ROLE}")]
    out.append(Check("scale set", True, f"{target}: {ss.orchestration_mode}, {ss.capacity} x {ss.vm_size} in "
                     f"{ss.location}, upgrade policy {ss.upgrade_mode}, image {ss.image}"))
    out.append(_permissions(network, ss, policy))
    signal = _signal(ss, policy)
    out.append(Check("health signal", signal is not None, signal or "none: only power and provisioning state could "
                     "be checked", "" if signal else "add the Application Health extension, a load balancer probe, "
                     "or a gate (--probe-url, --hook, a policy file's [[gates]])"))
    out += _fronts(network, ss)
    joins = ss.joins(policy.strategy, policy.drain)
    if joins:
        out.append(_joins(network, joins, policy))
    if change is not None and not change.empty:
        out.append(_image(api, ss, change))
    return out


def _permissions(network, ss: ScaleSet, policy: RolloutPolicy) -> Check:
    actions = UPGRADE + (SURGE if policy.strategy == "surge" else ())
    refused = network.refused_on(ss.resource_group, "Microsoft.Compute", "virtualMachineScaleSets", ss.name, actions)
    if policy.strategy == BLUE_GREEN and refused is not None:
        on_group = network.refused_on(ss.resource_group, "", "", None, BLUE_GREEN_GROUP)
        refused += [f"{a} on the resource group" for a in on_group or []]
    if refused is None:
        return Check("permissions", None, "the permissions API could not say (what is missing shows at the first "
                     "write, before anything is disrupted)")
    if refused:
        return Check("permissions", False, f"the credential lacks {'; '.join(refused)}", f"grant {ROLE}")
    return Check("permissions", True, f"may do what --strategy {policy.strategy} does on the set")


def _signal(ss: ScaleSet, policy: RolloutPolicy) -> str | None:
    from vmssctl.upgrade import health_signal

    return health_signal(ss, policy)


def _fronts(network, ss: ScaleSet) -> list[Check]:
    if not ss.fronted:
        return [Check("load balancers", None, "none in front of the set: nothing to drain (--drain none)")]
    from vmssctl.render import load_balancing, rule_line
    from vmssctl.rollout.strategies.drain import NEEDS

    try:
        rules = [rule_line(r) for r in load_balancing(network.backends(ss))]
    except VmssctlError as e:
        return [Check("load balancers", False, f"cannot read them: {_short(e)}",
                      "grant Network Contributor on the load balancer (or Reader, with --drain none)")]
    out = [Check("load balancers", True, "; ".join(rules) or "the set's pools have no rule")]
    if ss.lb_pools:
        missing = network.refused(ss, NEEDS)
        out.append(Check("drain", not missing, "may set the VMs' admin state in the load balancers (--drain lb)"
                         if not missing else f"the credential lacks {'; '.join(missing)}",
                         "" if not missing else "grant Network Contributor on the load balancer, or pass --drain none"))
    return out


def _joins(network, joins: list[tuple[str, str]], policy: RolloutPolicy) -> Check:
    """What ARM's linked access check will ask of the writes this rollout makes: joining the set's subnets and
    pools (a new set's model, a VM's own network configuration)."""
    what = "the new set's VMs" if policy.strategy == BLUE_GREEN else "each VM's network configuration"
    missing = network.refused_joins(joins)
    if missing is None:
        return Check("joins", None, f"the permissions API could not say whether {what} may join the subnets and "
                     "pools (ARM's linked access check says at the first write)")
    if missing:
        return Check("joins", False, f"the credential lacks {'; '.join(missing)}", "grant Network Contributor on "
                     "the subnet and on the load balancer or gateway (or a role with their join actions)")
    return Check("joins", True, f"{what} may join the set's {len(joins)} subnet(s) and pool(s)")


def _image(api, ss: ScaleSet, change: ImageChange) -> Check:
    try:
        target = change.apply(ss.image)
    except UsageError as e:
        return Check("image", False, str(e))
    if target.kind != "platform" or (target.version or "").lower() == "latest":
        return Check("image", None, f"{target}: not checked here (a gallery image, a URI or 'latest')")
    try:
        versions = api.image_versions(ss.location, target)
    except ArmError as e:
        return Check("image", None, f"{target}: Compute could not list its versions ({_short(e)})")
    if target.version in versions:
        return Check("image", True, f"{target} is published in {ss.location}")
    newest = versions[-1] if versions else "none"
    return Check("image", False, f"{target} is not among the versions Compute lists in {ss.location} (newest: "
                 f"{newest})", "check the version (az vm image list --all -p … -f … -s …)")


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0][:300] if str(e) else type(e).__name__
