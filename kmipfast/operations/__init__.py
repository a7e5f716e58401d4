"""The operation table: one handler per KMIP operation this server offers.

Anything not listed answers Operation Not Supported (the batch loop does that).
"""

from __future__ import annotations

from kmipfast.operations import attributes, create, discover, get, lifecycle, locate, rekey
from kmipfast.protocol.enums import Operation
from kmipfast.protocol.processor import Handler, QuickHandler

DISPATCH: dict[int, Handler] = {
    Operation.DiscoverVersions: discover.discover_versions,
    Operation.Query: discover.query,
    Operation.Create: create.create,
    Operation.Register: create.register,
    Operation.Get: get.get,
    Operation.Check: get.check,
    Operation.GetAttributes: attributes.get_attributes,
    Operation.GetAttributeList: attributes.get_attribute_list,
    Operation.AddAttribute: attributes.add_attribute,
    Operation.ModifyAttribute: attributes.modify_attribute,
    Operation.DeleteAttribute: attributes.delete_attribute,
    Operation.Locate: locate.locate,
    Operation.Activate: lifecycle.activate,
    Operation.Revoke: lifecycle.revoke,
    Operation.Destroy: lifecycle.destroy,
    Operation.ReKey: rekey.rekey,
}

# Operations that can often be answered without waiting (see Processor.answer_now).
QUICK: dict[int, QuickHandler] = {Operation.Get: get.cached_get}
