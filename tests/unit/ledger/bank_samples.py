"""The data behind config/banks/samples/*.txt (the unit test renders it and compares bytes)."""

import datetime as dt

BATCH = {"batch_no": "202604250001", "date": dt.date(2026, 4, 25)}
ITEMS = [
    {"seq": 1, "account_code": "A000101", "bank_account_no": "6222020200112233445", "holder_name": "张伟", "amount": 12345},
    {"seq": 2, "account_code": "A000102", "bank_account_no": "6222020200112233446", "holder_name": "欧阳娜娜", "amount": 8800},
    {"seq": 3, "account_code": "A000103", "bank_account_no": "6222020200112233447",
     "holder_name": "北京市朝阳区某某餐饮管理有限公司", "amount": 156000},
    {"seq": 4, "account_code": "A000104", "bank_account_no": "6222020200112233448", "holder_name": "李雷", "amount": 4500},
]
# the bank's answers: (status, reason code, reason text) per seq
RESULTS = {
    "icbc": {1: ("0000", "", ""), 2: ("3001", "3001", ""), 3: ("0000", "", ""), 4: ("3002", "3002", "")},
    "ccb": {1: ("S", "", ""), 2: ("F", "E01", "余额不足"), 3: ("S", "", ""), 4: ("F", "E03", "客户已解约")},
}


def out_data() -> tuple[dict, list[dict]]:
    total = sum(i["amount"] for i in ITEMS)
    return {**BATCH, "count": len(ITEMS), "total": total}, ITEMS


def return_data(bank: str) -> tuple[dict, list[dict]]:
    details = []
    for item in ITEMS:
        status, code, text = RESULTS[bank][item["seq"]]
        details.append({**item, "status": status, "reason_code": code, "reason_text": text,
                        "bank_ref": f"{bank.upper()}{item['seq']:010d}" if status in ("0000", "S") else ""})
    paid = [d for d in details if d["status"] in ("0000", "S")]
    header = {**BATCH, "count": len(details), "total": sum(d["amount"] for d in details),
              "paid_count": len(paid), "paid_total": sum(d["amount"] for d in paid)}
    return header, details
