"""The chart of accounts: how account codes are built, and what each class means.

A code is ``PREFIX:detail``. Postings carry signed amounts in minor units, **debit > 0,
credit < 0**; the balance of a code is the sum of its postings. Assets and expenses normally
have debit (positive) balances, liabilities and income credit (negative) ones.

==========  =========  ======================================  ==========================================
prefix      type       code                                    meaning
==========  =========  ======================================  ==========================================
AR          asset      ``AR:<account id>``                     receivable of one customer account (应收):
                                                               bills, late fees, manual charges
PREPAID     liability  ``PREPAID:<account id>``                prepaid balance / overpayment (预存款);
                                                               a credit balance is money the utility holds
REV         income     ``REV:<component>``                     revenue per tariff component (REV:water,
                                                               REV:sewage, REV:resource_fee, ...);
                                                               ``REV:waiver`` contra-revenue of waivers,
                                                               ``REV:adjustment`` manual charges
TAX         liability  ``TAX:<code>``                          tax payable (``TAX:vat``)
CASH        asset      ``CASH:<channel>[:<sub>]``              money received: ``CASH:counter:<cashier>``,
                                                               ``CASH:bank:<bank>``, ``CASH:withholding:<bank>``,
                                                               ``CASH:wechat:<mchid>``, ``CASH:alipay:<app id>``,
                                                               ``CASH:prepaid_card``
INC         income     ``INC:late_fee``, ``INC:bad_debt_recovery``  late-fee income (滞纳金), recoveries
EXP         expense    ``EXP:bad_debt``                        bad-debt write-offs (坏账)
REFUND      liability  ``REFUND:payable``                      refunds approved, not paid out yet
SUSPENSE    liability  ``SUSPENSE:<channel>``                  money that matched no account (待查)
==========  =========  ======================================  ==========================================

The same table lives in the database (``ledger_account_class``), whose posting trigger refuses
a code of no class; this module builds codes and checks them before they get there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from meterline.ledger.errors import UnknownAccountCode


@dataclass(frozen=True, slots=True)
class AccountClass:
    prefix: str
    pattern: re.Pattern[str]
    type: str  # asset, liability, income, expense
    name: str

    @property
    def normal_sign(self) -> int:
        """+1 when the class normally has a debit balance, -1 for a credit balance."""
        return 1 if self.type in ("asset", "expense") else -1


CLASSES: dict[str, AccountClass] = {
    c.prefix: c
    for c in (
        AccountClass("AR", re.compile(r"AR:[0-9]+"), "asset", "receivable per customer account"),
        AccountClass("PREPAID", re.compile(r"PREPAID:[0-9]+"), "liability", "prepaid balance per account"),
        AccountClass("REV", re.compile(r"REV:[a-z0-9_]+"), "income", "revenue per tariff component"),
        AccountClass("TAX", re.compile(r"TAX:[a-z0-9_]+"), "liability", "tax payable"),
        AccountClass("CASH", re.compile(r"CASH:[a-z0-9_]+(:[^:\s]+)?"), "asset", "money received per channel"),
        AccountClass("INC", re.compile(r"INC:(late_fee|bad_debt_recovery)"), "income", "other income"),
        AccountClass("EXP", re.compile(r"EXP:bad_debt"), "expense", "bad-debt expense"),
        AccountClass("REFUND", re.compile(r"REFUND:payable"), "liability", "refunds payable"),
        AccountClass("SUSPENSE", re.compile(r"SUSPENSE:[a-z0-9_]+"), "liability", "unmatched money"),
    )
}

LATE_FEE_INCOME = "INC:late_fee"
RECOVERY_INCOME = "INC:bad_debt_recovery"
BAD_DEBT_EXPENSE = "EXP:bad_debt"
REFUND_PAYABLE = "REFUND:payable"
REV_WAIVER = "REV:waiver"
REV_ADJUSTMENT = "REV:adjustment"
TAX_DEFAULT = "TAX:vat"

_COMPONENT = re.compile(r"[^a-z0-9_]+")


def ar(account_id: int) -> str:
    return f"AR:{int(account_id)}"


def prepaid(account_id: int) -> str:
    return f"PREPAID:{int(account_id)}"


def component_code(component: str) -> str:
    """A tariff component as the detail of a revenue code: lower case, [a-z0-9_]."""
    out = _COMPONENT.sub("_", component.strip().lower()).strip("_")
    return out or "other"


def rev(component: str) -> str:
    return f"REV:{component_code(component)}"


def tax(code: str = "vat") -> str:
    return f"TAX:{component_code(code)}"


def cash(channel: str, sub: str | None = None) -> str:
    code = f"CASH:{component_code(channel)}"
    if sub:
        sub = re.sub(r"[:\s]+", "_", sub.strip())
        code += f":{sub}"
    return code


def suspense(channel: str) -> str:
    return f"SUSPENSE:{component_code(channel)}"


def account_class(code: str) -> AccountClass:
    """The class of ``code``; :class:`UnknownAccountCode` when it fits none."""
    cls = CLASSES.get(code.split(":", 1)[0])
    if cls is None or not cls.pattern.fullmatch(code):
        raise UnknownAccountCode(code)
    return cls


def customer_account_id(code: str) -> int | None:
    """The customer account id of an ``AR:`` or ``PREPAID:`` code, else None."""
    prefix, _, rest = code.partition(":")
    return int(rest) if prefix in ("AR", "PREPAID") and rest.isdigit() else None
